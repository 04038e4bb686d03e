#!/bin/bash
# The shipped cascade through the product's trainer (napari-medai train segment), iteration budgets
# (reproducible under CPU contention), background-friendly: every run writes checkpoints; rerun this
# script (it passes --resume) to continue after a stop. Data: $NAPARI_MEDAI_DATA (default ../shared/data).
#   final model on all 16 patients (organ 1334 + tumour 1000 + stage 800 iterations) -> runs/final/model
#   4 patient-grouped CV folds per network, 450 iterations each -> runs/v1_fold{k} (organ), runs/v3_fold{k} (tumour)
#   the tumour stage's 4 folds + all patients, 800 iterations -> runs/stage_fold{k}, runs/stage_final
#   (evaluate_tumour_stage.py reads runs/${TAG}_organ_fold{k}: run with TAG=cv14 for its default paths)
# Extra options go to every run, e.g. ZOOM=0.6,1.6 CROP=0.3 INIT=liver-tumor-ct TAG=v6 training/segmentation/run_all.sh
set -e
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=${THREADS:-1}
DATA=${NAPARI_MEDAI_DATA:-../shared/data}/ct/lits-slices-2d
PY=${PY:-python}
RUNS=training/segmentation/runs
OPTS=""
[ -n "$ZOOM" ] && OPTS="$OPTS --zoom $ZOOM"
[ -n "$CROP" ] && OPTS="$OPTS --crop-prob $CROP"
[ -n "$INIT" ] && OPTS="$OPTS --init $INIT"
mkdir -p $RUNS
train() { $PY -m napari_medai.cli.main train segment --data "$DATA" --resume $OPTS "$@"; }
for f in 0 1 2 3; do
  train --recipe organ --fold $f --iterations ${FOLD_ITERS:-450} -o $RUNS/${TAG:-v1}_organ_fold$f > $RUNS/${TAG:-v1}_organ_fold$f.log 2>&1
  train --recipe tumour --fold $f --iterations ${FOLD_ITERS:-450} -o $RUNS/${TAG:-v3}_tumour_fold$f > $RUNS/${TAG:-v3}_tumour_fold$f.log 2>&1
done
$PY training/segmentation/train_tumour_stage_cv.py --folds ${STAGE_FOLDS:-0,1,2,3,final} > $RUNS/stage_cv.log 2>&1
[ -n "$SKIP_FINAL" ] || train --recipe cascade --organ-iterations 1334 --tumour-iterations 1000 -o $RUNS/${TAG:-}final \
  > $RUNS/${TAG:-}final.log 2>&1
