#!/bin/bash
# v3 recipe: 4 patient-grouped CV folds (4.5 min each), then the final model on all 16 patients (12 min).
set -e
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=passive
PY=.venv/bin/python
mkdir -p training/segmentation/runs
for f in 0 1 2 3; do
  $PY training/segmentation/train2d.py --fold $f --folds 4 --minutes ${FOLD_MIN:-4.5} --tag v3_ > training/segmentation/runs/v3_fold$f.log 2>&1
done
$PY training/segmentation/train2d.py --fold -1 --minutes ${FINAL_MIN:-12} --out training/segmentation/runs/v3_final > training/segmentation/runs/v3_final.log 2>&1
