#!/usr/bin/env bash
# All GPU benchmarks in one call (synthetic CIFAR-shaped data, no download), under 12 minutes on one
# H100: training step GSL vs CE (eager and compiled), heads vs scikit-learn, evaluation throughput, and
# the Table 2 pipeline (train both, corrupt, evaluate) at full width for a short schedule.
# Usage: bash benchmarks/gpu_suite.sh [python]   (from the repository root, package installed or on PYTHONPATH)
set -uo pipefail
PY=${1:-python}
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
run() { echo; echo "== $*"; timeout "${STEP_TIMEOUT:-120}" "$PY" "$@" || echo "(exit $?)"; }
run benchmarks/train_step.py --device cuda
run benchmarks/train_step.py --device cuda --compile
run benchmarks/evaluate.py --device cuda
run benchmarks/heads.py --device cuda
# The Table 2 pipeline at full width for 2 epochs on synthetic CIFAR-10 (50,000 training, 5,000 test images):
# s/epoch and img/s of training, seconds to corrupt, evaluation img/s (benchmarks/table2_pipeline.py).
# Time limits: 4 steps x STEP_TIMEOUT (120 s) + PIPELINE_TIMEOUT (240 s) = 12 minutes at most.
echo; echo "== benchmarks/table2_pipeline.py --width 1 --epochs 2 --n-test 5000"
timeout "${PIPELINE_TIMEOUT:-240}" "$PY" benchmarks/table2_pipeline.py --out "${PIPELINE_OUT:-/tmp/robustgsl-table2}" \
  --width 1 --epochs 2 --n-test 5000 || echo "(exit $?)"
