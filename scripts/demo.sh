#!/usr/bin/env bash
# The main job on the bundled demo set with the offline default encoders:
# set up, make the demo data, validate, extract features, train, evaluate, predict.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SGMFT=.venv/bin/sgmft
$SGMFT demo demo/data
$SGMFT validate demo/data/manifest.jsonl
$SGMFT extract demo/data/manifest.jsonl --out demo/features
# 192 training posts: the fast preset with more epochs than its 6 (made for 17,000 posts)
$SGMFT train --data demo/data/manifest.jsonl --cache demo/features --config fast \
  --set train.epochs=40 --out demo/run
$SGMFT evaluate demo/run
$SGMFT predict demo/run --text "周末和朋友去吃火锅，太好吃了[馋嘴]" --image demo/data/images/restaurant-003.jpg
$SGMFT predict demo/run --manifest demo/data/manifest.jsonl --out demo/predictions.csv
