#!/usr/bin/env bash
# All GPU benchmarks in one call (synthetic CIFAR-shaped data, no download), under 8 minutes on one
# H100: training step GSL vs CE (eager and compiled), heads vs scikit-learn, evaluation throughput.
# Usage: bash benchmarks/gpu_suite.sh [python]   (from the repository root, package installed or on PYTHONPATH)
set -uo pipefail
PY=${1:-python}
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
run() { echo; echo "== $*"; timeout "${STEP_TIMEOUT:-150}" "$PY" "$@" || echo "(exit $?)"; }
run benchmarks/train_step.py --device cuda
run benchmarks/train_step.py --device cuda --compile
run benchmarks/evaluate.py --device cuda
run benchmarks/heads.py --device cuda
