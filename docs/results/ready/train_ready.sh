#!/usr/bin/env bash
# The ready model `deeppcb` (issue 17, item 1): the recommended preset trained on DeepPCB trainval less the
# seven example pairs shipped beside it, calibrated at the accuracy policy on 4,000 of its training patches,
# saved with float16 weights into the package. Run from the repository root:
#   bash docs/results/ready/train_ready.sh ../shared/datasets/DeepPCB
set -euo pipefail
DATA=${1:-../shared/datasets/DeepPCB}
PRESET=${PRESET:-cpu-stack-band}
SPLIT=docs/results/ready/train.txt
python docs/results/ready/make_examples.py "$DATA"          # src/pcbsiam/ready/examples/ and $SPLIT
pcbsiam train --config "$PRESET" --data "$DATA" --out runs/ready \
    --set data.split="$SPLIT" --set data.val_fraction=0      # every listed item trains; no validation split
pcbsiam calibrate --model runs/ready --data "$DATA" --split "$SPLIT" --max-patches 4000 --half \
    --bundle src/pcbsiam/ready/deeppcb.bundle
pcbsiam info deeppcb --json > runs/ready/info.json
