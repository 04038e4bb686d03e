#!/bin/bash
# v3 recipe, iteration budgets (reproducible under CPU contention), two streams of 1 thread each:
#   stream 1: final model on all 16 patients, 1000 iterations
#   stream 2: 4 patient-grouped CV folds, 450 iterations each
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=passive
PY=.venv/bin/python
mkdir -p training/segmentation/runs
$PY training/segmentation/train2d.py --fold -1 --iters ${FINAL_ITERS:-1000} --threads 1 --out training/segmentation/runs/v3_final > training/segmentation/runs/v3_final.log 2>&1 &
for f in 0 1 2 3; do
  $PY training/segmentation/train2d.py --fold $f --folds 4 --iters ${FOLD_ITERS:-450} --threads 1 --tag v3_ > training/segmentation/runs/v3_fold$f.log 2>&1
done
wait
