#!/bin/bash
# Stage-1 acceptance runs on mcv-museum + 3,000 distractors: each stage-1 recipe trained at the
# CPU budget (4 epochs of 640 images), then scored the way users submit (recipes/submission.yaml).
#   RUNS="simclr dino dino-small" EVAL="embed.turns=[0] embed.crop=false" bash benchmarks/stage1_acceptance.sh
#   python -m eval.compare runs/stage1/eval-* --baseline runs/stage1/eval-zeroshot
# RUNS names recipes/RUN.yaml (default: simclr dino dino-small); EVAL adds evaluation overrides (one view
# is about 4x faster than the submission's views). The ablation that led here is in docs/results/stage1.md.
cd "$(dirname "$0")/.." && source .venv/bin/activate
export CURATOR_SHARED=../shared
DATA="data.labeled=[../shared/data/mcv-museum] data.distractors=[../shared/data/distractors]"
COMMON="train.epochs=4 train.images_per_epoch=640 monitor.pool_size=700 embed.progress=false"
EVAL="embed.progress=false ${EVAL:-}"
RUNS=${RUNS:-"simclr dino dino-small"}
mkdir -p runs/stage1
# shellcheck disable=SC2086
[ -f runs/stage1/eval-zeroshot/metrics.json ] || python -m eval recipes/submission.yaml $DATA $EVAL run_dir=runs/stage1/eval-zeroshot > runs/stage1/eval-zeroshot.out 2>&1
for run in $RUNS; do
  # shellcheck disable=SC2086
  /usr/bin/time -v python -m ssl.pretrain recipes/$run.yaml $DATA $COMMON run_dir=runs/stage1/$run > runs/stage1/$run.out 2>&1
  # shellcheck disable=SC2086
  python -m eval recipes/submission.yaml model.weights=runs/stage1/$run/encoder.pt $DATA $EVAL run_dir=runs/stage1/eval-$run > runs/stage1/eval-$run.out 2>&1
done
