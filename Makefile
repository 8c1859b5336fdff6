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

.PHONY: setup demo test bench clean
setup: $(SETUP_STAMP)

$(SETUP_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# CPU build of torch first (pinned in constraints.txt; any other version pulls a CUDA build).
	$(PIP) torch==2.13.0 2>&1 | $(QUIET_PIP)
	# transformers' Qwen-VL processors need torchvision; the registry only has CUDA builds, which
	# import beside CPU torch once their fake-kernel registrations are made conditional on the ops.
	$(PIP) --no-deps torchvision==0.28.0 2>&1 | $(QUIET_PIP)
	tv=$$($(BIN)/python -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('torchvision').origin).parent / '_meta_registrations.py')"); \
	sed -i 's/^@torch\.library\.register_fake(\("torchvision::[a-z_]*"\))$$/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda fn: fn))/' "$$tv"
	$(PIP) -e ".[dev]" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import rmsd.gen.cli, torchvision, transformers, trl, ray, polars, av; print('rmsd setup ok: torch', __import__('torch').__version__)"
	rm -f $(VENV)/.setup-* && touch $@

demo: setup
	$(BIN)/rmsd-gen synth --out $(DEMO_DIR)/benchmark --num 200 --seed 0
	$(BIN)/rmsd-gen run --pipeline demo --prompts $(DEMO_DIR)/benchmark/prompts.parquet --out $(DEMO_DIR)/samples
	@echo "benchmark: $(DEMO_DIR)/benchmark  samples: $(DEMO_DIR)/samples (manifest: $(DEMO_DIR)/samples/_manifest.json)"

test: setup
	$(BIN)/python -m pytest tests

bench: setup
	$(BIN)/python bench/frames.py
	$(BIN)/python bench/filter.py

clean:
	rm -rf $(VENV) runs .pytest_cache
