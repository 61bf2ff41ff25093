#!/bin/bash
# Issue 12, item 2: does training with the queries' conditions (quarter turns at the 4:29:11 mix,
# tilt inside pale padding) make stage 1 turn-invariant, and does it survive whitening and add to
# the embedding-time views? SimCLR at the stage-1 acceptance budget with the default views and with
# views.turn_p/views.padding_p on, each evaluated through recipes/submission.yaml keeping the views
# 0, 180, crop and crop+180, then benchmarks.query_views derives every option those views allow for
# both encoders (raw and whitened, per synthetic condition). The zero-shot row is the run that kept
# all eight views (ZEROSHOT_RUN, made with the command in benchmarks/query_views.py).
cd "$(dirname "$0")/.." && source .venv/bin/activate
export CURATOR_SHARED=${CURATOR_SHARED:-../shared}
DISTRACTORS=${DISTRACTORS:-../shared/data/distractors}
OUT=${OUT:-runs/train_views}
DATA="data.labeled=[../shared/data/mcv-museum] data.distractors=[$DISTRACTORS]"
COMMON="train.epochs=4 train.images_per_epoch=640 monitor.pool_size=700 embed.progress=false"
VIEWS="embed.precision=fp32 embed.turns=[0,180] embed.crop=true embed.combine=gate embed.progress=false"
declare -A EXTRA=([simclr]="" [simclr-turns]="views.turn_p=0.44 views.padding_p=0.5")
mkdir -p "$OUT"
for run in simclr simclr-turns; do
  # shellcheck disable=SC2086
  /usr/bin/time -v python -m ssl.pretrain recipes/simclr.yaml $DATA $COMMON ${EXTRA[$run]} run_dir=$OUT/$run > $OUT/$run.out 2>&1
  # shellcheck disable=SC2086
  python -m eval recipes/submission.yaml model.weights=$OUT/$run/encoder.pt $DATA $VIEWS run_dir=$OUT/eval-$run > $OUT/eval-$run.out 2>&1
done
# shellcheck disable=SC2086
python -m benchmarks.query_views ${ZEROSHOT_RUN:-} $OUT/eval-simclr $OUT/eval-simclr-turns --timing-images 0 --out $OUT/query_views.csv
