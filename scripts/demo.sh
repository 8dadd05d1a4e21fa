#!/usr/bin/env bash
# The main job on the bundled demo set with the offline default encoders:
# set up, make the demo data, validate, extract features, train, evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SGMFT=.venv/bin/sgmft
$SGMFT demo demo/data
$SGMFT validate demo/data/manifest.jsonl
$SGMFT extract demo/data/manifest.jsonl --out demo/features
$SGMFT train --data demo/data/manifest.jsonl --cache demo/features --config fast --out demo/run
$SGMFT evaluate demo/run
