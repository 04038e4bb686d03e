#!/bin/bash
# Final model on all 16 patients, then the 4 patient-grouped CV folds (sequential; 2 threads).
set -e
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=passive
PY=.venv/bin/python
$PY training/segmentation/train2d.py --fold -1 --minutes ${FINAL_MIN:-11} --out training/segmentation/runs/final > training/segmentation/runs/final.log 2>&1
for f in 0 1 2 3; do
  $PY training/segmentation/train2d.py --fold $f --folds 4 --minutes ${FOLD_MIN:-5} > training/segmentation/runs/fold$f.log 2>&1
done
