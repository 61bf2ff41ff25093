#!/bin/bash
# Stage-1 acceptance runs on mcv-museum + 3,000 distractors (commands quoted in the closing note);
# python -m eval.compare runs/stage1/eval-* puts them side by side, before and after whitening.
cd "$(dirname "$0")/.." && source .venv/bin/activate
export CURATOR_SHARED=../shared
DATA="data.labeled=[../shared/data/mcv-museum] data.distractors=[../shared/data/distractors]"
COMMON="train.epochs=4 train.images_per_epoch=640 monitor.pool_size=700 embed.progress=false"
# Every encoder is scored the way users submit: recipes/submission.yaml (its views, then whitening),
# raw figures beside. EVAL adds overrides, e.g. EVAL="embed.turns=[0] embed.crop=false" for one view
# (about 4x faster).
EVAL="embed.progress=false ${EVAL:-}"
mkdir -p runs/stage1
# shellcheck disable=SC2086
python -m eval recipes/submission.yaml $DATA $EVAL run_dir=runs/stage1/eval-zeroshot > runs/stage1/eval-zeroshot.out 2>&1
declare -A EXTRA=(
  [dino]=""
  [simclr]=""
  # What else was tried to make DINO move at this budget.
  [dino-strong]="train.lr=1e-4 train.head_lr=2e-3 dino.out_dim=2048 dino.momentum_start=0.99 dino.freeze_last_layer_epochs=0"
  [dino-proto]="dino.prototypes=data"
)
for run in dino simclr dino-strong dino-proto; do
  recipe=recipes/${run%%-*}.yaml
  # shellcheck disable=SC2086
  /usr/bin/time -v python -m ssl.pretrain $recipe $DATA $COMMON ${EXTRA[$run]} run_dir=runs/stage1/$run > runs/stage1/$run.out 2>&1
  # shellcheck disable=SC2086
  python -m eval recipes/submission.yaml model.weights=runs/stage1/$run/encoder.pt $DATA $EVAL run_dir=runs/stage1/eval-$run > runs/stage1/eval-$run.out 2>&1
done
# How informative the DINO teachers' targets are, fresh and after each run.
# shellcheck disable=SC2086
python -m benchmarks.dino_targets runs/stage1/dino runs/stage1/dino-strong runs/stage1/dino-proto $DATA embed.progress=false > runs/stage1/dino-targets.out 2>&1
