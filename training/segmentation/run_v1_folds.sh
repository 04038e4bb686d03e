#!/bin/bash
# Organ-model (v1 recipe) CV folds 1-3, 450 iterations each, 1 thread (fold 0 was run time-budgeted: 460 iterations).
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=passive
for f in 1 2 3; do
  .venv/bin/python training/segmentation/train2d.py --recipe v1 --fold $f --folds 4 --iters 450 --threads 1 --tag v1_ > training/segmentation/runs/v1_fold$f.log 2>&1
done
