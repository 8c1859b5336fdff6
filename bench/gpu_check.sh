#!/usr/bin/env bash
# The training and HF-generation paths on one GPU (no vLLM or Ray needed): weighted vs plain SFT
# step and an RL step's split (bench/train.py, ~100 M-parameter model), with vLLM rollouts against
# HF generate where a vLLM build is installed (said plainly where not), then rmsd-train sft (gt) and
# eval from their command lines on the GPU. Usage: bench/gpu_check.sh OUT_DIR  (python3 with rmsd's
# dependencies importable, rmsd importable as a package).
set -euo pipefail
out=${1:?OUT_DIR}
mkdir -p "$out"
work=$(mktemp -d)
{ nvidia-smi -L || echo "no nvidia-smi"; } | tee "$out/device.txt"
python3 -c "import torch, transformers, trl; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'trl', trl.__version__)" | tee -a "$out/device.txt"
python3 bench/train.py --preset "${PRESET:-bench}" --batch 8 --steps 10 --rl-steps 4 --rl-tokens 64 2>&1 | grep -v -i "warn\|it/s\]" | tee "$out/bench_train.txt"
# RL rollouts on vLLM against HF generate (issue 23), where this machine has a vLLM build
if python3 -c "import vllm" 2>/dev/null; then
  python3 bench/train.py --preset "${PRESET:-bench}" --steps 0 --rl-steps 3 --batch 8 --rl-generations 8 --rl-tokens 128 --rl-rollouts hf,vllm 2>&1 \
    | grep -v -i "warn\|it/s\]\|INFO" | tee "$out/bench_rl_rollouts.txt"
else
  echo "no vLLM build on this machine: the RL rollout comparison (hf vs vllm) was not run" | tee "$out/bench_rl_rollouts.txt"
fi
python3 -c "from rmsd.synth import synthesise; synthesise('$work/bench', 8, seed=0, workers=2, progress=False)"
start=$(date +%s)
python3 -m rmsd.train.cli sft --mode gt --data "$work/bench/prompts.parquet" --model "$work/student" --init "${PRESET:-bench}" --out "$work/sft" \
  --max-steps 40 --batch-size 8 --lr 1e-4 --save-steps 20 2>&1 | grep -v -i "warn\|it/s\]" | tail -5 | tee "$out/sft.txt"
echo "sft 40 steps: $(( $(date +%s) - start )) s" | tee -a "$out/sft.txt"
python3 -c "import json; s=json.load(open('$work/sft/checkpoint-40/trainer_state.json')); print([round(e['loss'],3) for e in s['log_history'] if 'loss' in e])" | tee -a "$out/sft.txt"
start=$(date +%s)
python3 -m rmsd.train.cli eval --model "$work/sft/final" --prompts "$work/bench/prompts.parquet" --out "$work/eval" --split "" --no-progress 2>&1 | tail -2 | tee "$out/eval.txt"
echo "eval: $(( $(date +%s) - start )) s" | tee -a "$out/eval.txt"
cp "$work/eval/eval.md" "$out/eval.md"
