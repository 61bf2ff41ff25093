#!/bin/bash
# Stage-1 acceptance runs on mcv-museum + 3,000 distractors (commands quoted in the closing note);
# python -m eval.compare runs/stage1/eval-* --baseline runs/stage1/eval-zeroshot puts them side by side,
# before and after whitening, each paired with zero-shot query by query (95% interval, McNemar's p).
# RUNS="dino dino-small" picks configurations (default: all); the zero-shot evaluation always runs;
# STUDENTS=1 also scores every DINO run's student (runs/stage1/eval-RUN-student).
cd "$(dirname "$0")/.." && source .venv/bin/activate
export CURATOR_SHARED=../shared
DATA="data.labeled=[../shared/data/mcv-museum] data.distractors=[../shared/data/distractors]"
COMMON="train.epochs=4 train.images_per_epoch=640 monitor.pool_size=700 embed.progress=false"
# Every encoder is scored the way users submit: recipes/submission.yaml (its views, then whitening),
# raw figures beside. EVAL adds overrides, e.g. EVAL="embed.turns=[0] embed.crop=false" for one view
# (about 4x faster).
EVAL="embed.progress=false ${EVAL:-}"
# lightly-train's DINO for small datasets (src/lightly_train/_methods/dino/dino.py, commit 0520258):
# 1,024 prototypes up to 20k images, teacher temperature 0.02 from the start (0.07 "too high for
# small datasets", targets collapse to uniform), teacher momentum from 0.99.
SMALL="dino.out_dim=1024 dino.teacher_temp=0.02 dino.warmup_teacher_temp=0.02 dino.momentum_start=0.99"
declare -A EXTRA=(
  [dino]=""
  [simclr]=""
  # What was tried before the small-data values to make DINO move at this budget.
  [dino-strong]="train.lr=1e-4 train.head_lr=2e-3 dino.out_dim=2048 dino.momentum_start=0.99 dino.freeze_last_layer_epochs=0"
  [dino-proto]="dino.prototypes=data"
  # The ablation: the small-data values, then each change alone on top of them, then all.
  [dino-small]="$SMALL"
  [dino-small-koleo]="$SMALL dino.koleo_weight=0.1"
  [dino-small-cross]="$SMALL dino.cross_domain=true"
  [dino-small-warm2]="$SMALL train.head_warmup_epochs=2"
  [dino-small-unfrozen]="$SMALL dino.freeze_last_layer_epochs=0"
  [dino-small-proto]="$SMALL dino.prototypes=data"
  [dino-small-all]="$SMALL dino.koleo_weight=0.1 dino.cross_domain=true dino.prototypes=data"
  # The backbone's learning rate 5x (the recipes' 2e-5 moves the last blocks little in 120 steps).
  [dino-small-lr]="$SMALL train.lr=1e-4"
  [dino-small-all-lr]="$SMALL dino.koleo_weight=0.1 dino.cross_domain=true dino.prototypes=data train.lr=1e-4"
  # Three times the budget (12 epochs of 640): does DINO earn its keep with more steps? Not in RUNS'
  # default (17 min alone on 2 cores); RUNS=dino-small-koleo-12ep runs it.
  [dino-small-koleo-12ep]="$SMALL dino.koleo_weight=0.1 train.epochs=12 monitor.every_n_epochs=2"
  # Instance prototypes: one per pool image (K >= N, data-initialised), so the teacher's target names
  # the image itself and the loss approaches instance discrimination, as SimCLR's does.
  [dino-inst]="$SMALL dino.out_dim=4096 dino.prototypes=data dino.prototype_images=4096 dino.koleo_weight=0.1 dino.cross_domain=true"
  # A frozen teacher (momentum 1: the pretrained model and its instance prototypes) distilled into
  # the student from visitor photos; the student is exported.
  [dino-frozen]="$SMALL dino.out_dim=4096 dino.prototypes=data dino.prototype_images=4096 dino.cross_domain=true dino.momentum_start=1.0 train.export=student"
  # How far a second seed moves the figures (the training's random choices; the scored pool is the same).
  [simclr-seed1]="seed=1"
  [dino-small-koleo-seed1]="$SMALL dino.koleo_weight=0.1 seed=1"
)
RUNS=${RUNS:-"dino simclr dino-strong dino-proto dino-small dino-small-koleo dino-small-cross dino-small-warm2
  dino-small-unfrozen dino-small-proto dino-small-all dino-small-lr dino-small-all-lr"}
mkdir -p runs/stage1
# shellcheck disable=SC2086
[ -f runs/stage1/eval-zeroshot/metrics.json ] || python -m eval recipes/submission.yaml $DATA $EVAL run_dir=runs/stage1/eval-zeroshot > runs/stage1/eval-zeroshot.out 2>&1
for run in $RUNS; do
  recipe=recipes/${run%%-*}.yaml
  # shellcheck disable=SC2086
  /usr/bin/time -v python -m ssl.pretrain $recipe $DATA $COMMON ${EXTRA[$run]} run_dir=runs/stage1/$run > runs/stage1/$run.out 2>&1
  # shellcheck disable=SC2086
  python -m eval recipes/submission.yaml model.weights=runs/stage1/$run/encoder.pt $DATA $EVAL run_dir=runs/stage1/eval-$run > runs/stage1/eval-$run.out 2>&1
  # STUDENTS=1 scores each DINO run's student too (the encoder file holds its EMA teacher).
  if [ -n "${STUDENTS:-}" ] && [ "${run%%-*}" = dino ]; then
    python -m benchmarks.export_student runs/stage1/$run > runs/stage1/student-$run.out 2>&1
    # shellcheck disable=SC2086
    python -m eval recipes/submission.yaml model.weights=runs/stage1/$run/student.pt $DATA $EVAL run_dir=runs/stage1/eval-$run-student >> runs/stage1/student-$run.out 2>&1
  fi
done
# How informative the DINO teachers' targets are, fresh and after each run.
# shellcheck disable=SC2086
python -m benchmarks.dino_targets $(ls -d runs/stage1/dino runs/stage1/dino-* 2>/dev/null | grep -v '\.out$') $DATA embed.progress=false > runs/stage1/dino-targets.out 2>&1
