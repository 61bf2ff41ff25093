#!/bin/bash
# Stage-2 acceptance runs on mcv-museum + 3,000 distractors, from the SimCLR stage-1 encoder and
# from zero-shot DINOv2 (commands quoted in the closing note). Needs runs/stage1/simclr (stage1_acceptance.sh).
cd "$(dirname "$0")/.." && source .venv/bin/activate
export CURATOR_SHARED=../shared
DATA="data.labeled=[../shared/data/mcv-museum] data.distractors=[../shared/data/distractors]"
COMMON="monitor.pool_size=700 embed.progress=false"
# Every final encoder is scored through recipes/submission.yaml (EVAL: overrides, as in stage1_acceptance.sh).
EVAL="embed.progress=false ${EVAL:-}"
/usr/bin/time -v python -m adapt.pseudolabel recipes/pseudolabel.yaml $DATA $COMMON model.weights=runs/stage1/simclr mining.verify=true run_dir=runs/stage2/from-simclr-verified > runs/stage2-from-simclr-verified.out 2>&1
/usr/bin/time -v python -m adapt.pseudolabel recipes/pseudolabel.yaml $DATA $COMMON mining.verify=true run_dir=runs/stage2/from-zeroshot > runs/stage2-from-zeroshot.out 2>&1
# The same from SimCLR without geometric verification (the trade-off in recipes/pseudolabel.yaml).
/usr/bin/time -v python -m adapt.pseudolabel recipes/pseudolabel.yaml $DATA $COMMON model.weights=runs/stage1/simclr mining.verify=false run_dir=runs/stage2/from-simclr > runs/stage2-from-simclr.out 2>&1
# Rounds 3-4 of both SimCLR runs (each continues from its round-2 encoder), and zero-shot without
# verification: does the unverified advantage hold over more rounds and from the weaker start?
/usr/bin/time -v python -m adapt.pseudolabel recipes/pseudolabel.yaml $DATA $COMMON model.weights=runs/stage2/from-simclr/round2/encoder.pt mining.verify=false run_dir=runs/stage2/from-simclr-r34 > runs/stage2-from-simclr-r34.out 2>&1
/usr/bin/time -v python -m adapt.pseudolabel recipes/pseudolabel.yaml $DATA $COMMON model.weights=runs/stage2/from-simclr-verified/round2/encoder.pt mining.verify=true run_dir=runs/stage2/from-simclr-verified-r34 > runs/stage2-from-simclr-verified-r34.out 2>&1
/usr/bin/time -v python -m adapt.pseudolabel recipes/pseudolabel.yaml $DATA $COMMON mining.verify=false run_dir=runs/stage2/from-zeroshot-unverified > runs/stage2-from-zeroshot-unverified.out 2>&1
for run in runs/stage2/*/; do
  run=$(basename "$run")
  [[ $run == eval-* ]] && continue
  encoder=$(python -c "import json; print(json.load(open('runs/stage2/$run/metrics.json'))['encoder'])")
  # shellcheck disable=SC2086
  python -m eval recipes/submission.yaml model.weights="$encoder" $DATA $EVAL run_dir=runs/stage2/eval-$run > runs/stage2-eval-$run.out 2>&1
done
