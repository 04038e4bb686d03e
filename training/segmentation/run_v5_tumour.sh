#!/bin/bash
# Tumour network v5 = v3 recipe + synthetic lesions (--synth 0.5, Hu et al. 2023, pasted into tumour-free
# livers) + the TotalSegmentator example slices; same iteration budgets as v3 (folds 450, final 1000), so the
# CV compares like with like (summarize_cv.py --tag v5_ --organ-tag v1_ vs --tag v3_ --organ-tag v1_).
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=passive
PY=.venv/bin/python
for f in 0 1 2 3; do
  $PY training/segmentation/train2d.py --fold $f --folds 4 --iters 450 --synth 0.5 --extra totalseg_128 --threads 1 \
    --tag v5_ > training/segmentation/runs/v5_fold$f.log 2>&1
done
$PY training/segmentation/train2d.py --fold -1 --iters 1000 --synth 0.5 --extra totalseg_128 --threads 1 \
  --out training/segmentation/runs/v5_final > training/segmentation/runs/v5_final.log 2>&1
