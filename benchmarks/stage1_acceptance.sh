#!/bin/bash
# Stage-1 acceptance runs on mcv-museum + 3,000 distractors (commands quoted in the closing note).
cd "$(dirname "$0")/.." && source .venv/bin/activate
export CURATOR_SHARED=../shared
DATA="data.labeled=[../shared/data/mcv-museum] data.distractors=[../shared/data/distractors]"
COMMON="train.epochs=4 train.images_per_epoch=640 monitor.pool_size=700 embed.progress=false"
for m in dino simclr; do
  /usr/bin/time -v python -m ssl.pretrain recipes/$m.yaml $DATA $COMMON run_dir=runs/stage1/$m > runs/stage1/$m.out 2>&1
done
for m in dino simclr; do
  python -m eval recipes/zeroshot.yaml model.weights=runs/stage1/$m/encoder.pt $DATA embed.progress=false run_dir=runs/stage1/eval-$m > runs/stage1/eval-$m.out 2>&1
done
