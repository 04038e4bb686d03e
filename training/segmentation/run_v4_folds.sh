#!/bin/bash
# Organ model v4 (v1 recipe + TotalSegmentator example slices incl. liver-free slices): 4 patient-grouped
# LiTS CV folds, 2000 iterations each, 1 thread (the shipped model: 5000 iterations on all 16 patients).
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=passive
for f in 0 1 2 3; do
  .venv/bin/python training/segmentation/train2d.py --recipe v1 --extra totalseg_128 --fold $f --folds 4 --iters 2000 \
    --threads 1 --tag v4_ > training/segmentation/runs/v4_fold$f.log 2>&1
done
