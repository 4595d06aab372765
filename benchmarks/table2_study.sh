#!/usr/bin/env bash
# Table 2 at CPU scale: CE and GSL (recommended preset), 2 seeds each, on the full real-image
# development split, then all 15 corruptions x 5 severities and every head. Results:
# benchmarks/README.md ("Table 2 at CPU scale") and benchmarks/results/table2_cpu/.
# Usage: bash benchmarks/table2_study.sh DEV_DIR WORK_DIR [python]
#   DEV_DIR  holds cifar-10-batches-py/ from shared/tools/cifar10_dev_split.py (no --subset)
#   WORK_DIR receives runs/, corruptions/ and the evaluation folder; rerunning resumes every step.
# Scale knobs (environment): WIDTH (0.125), EPOCHS (15), SEEDS (0,1).
set -euo pipefail
DEV=$1; WORK=$2; PY=${3:-python}
WIDTH=${WIDTH:-0.125}; EPOCHS=${EPOCHS:-15}; SEEDS=${SEEDS:-0,1}
# The preset's milestones at 50 % and 75 % of the epochs, as the paper's 100,150 of 200.
MILESTONES="$(( (EPOCHS + 1) / 2 )),$(( EPOCHS * 3 / 4 ))"
mkdir -p "$WORK"
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }
stamp "train CE and GSL: width $WIDTH, $EPOCHS epochs, milestones $MILESTONES, seeds $SEEDS"
resume=(); [ -d "$WORK/runs" ] && resume=(--resume)
"$PY" -m robustgsl train-both --dataset cifar10 --data-dir "$DEV" --no-download --width "$WIDTH" \
  --epochs "$EPOCHS" --milestones "$MILESTONES" --seeds "$SEEDS" --out "$WORK/runs" "${resume[@]}"
stamp "corrupt the 5,000 development-test images"
"$PY" -m robustgsl corrupt --dataset cifar10 --data-dir "$DEV" --no-download --corruptions all \
  --out "$WORK/corruptions/CIFAR-10-C"
stamp "evaluate every head on clean + 75 corrupted sets"
runs=(); for s in ${SEEDS//,/ }; do runs+=("$WORK/runs/seed$s/ce" "$WORK/runs/seed$s/gsl"); done
"$PY" -m robustgsl evaluate "${runs[@]}" --data-dir "$DEV" --no-download --corruptions all \
  --corruption-dir "$WORK/corruptions/CIFAR-10-C" --out "$WORK/evaluation"
stamp "done: $WORK/evaluation/index.html"
