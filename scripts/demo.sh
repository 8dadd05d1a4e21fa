#!/usr/bin/env bash
# The main job on the bundled demo set with the offline default encoders:
# set up, make the demo data, validate, extract features, train, evaluate, predict.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SGMFT=.venv/bin/sgmft
step() { printf '\n== %s\n' "$*"; }
step "demo data (a demo of the pipeline, not a benchmark)"
$SGMFT demo demo/data
step "validate"
$SGMFT validate demo/data/manifest.jsonl
step "extract features (cached beside the data)"
$SGMFT extract demo/data/manifest.jsonl --out demo/features
step "train (the recommended preset, sgmft)"
$SGMFT train --data demo/data/manifest.jsonl --cache demo/features --out demo/run --overwrite
step "evaluate"
$SGMFT evaluate demo/run
step "predict one post"
$SGMFT predict demo/run --text "周末和朋友去吃火锅，太好吃了[馋嘴]" --image demo/data/images/restaurant-003.jpg
step "predict the whole manifest"
$SGMFT predict demo/run --manifest demo/data/manifest.jsonl --out demo/predictions.csv
step "profile: each user's places with 95 % intervals, and by hour (the demo's planted habits)"
$SGMFT profile demo/run --manifest demo/data/manifest.jsonl --out demo/profiles --time time --every hour --min-posts 10
accuracy=$(.venv/bin/python -c "import json; m = json.load(open('demo/run/eval/metrics.json')); print(f\"{100 * m['accuracy']:.1f} % on {m['n']} test posts (text alone {100 * m['text_only']['accuracy']:.1f} %, image alone {100 * m['image_only']['accuracy']:.1f} %)\")")
cat <<SUMMARY

== Done
Test accuracy: $accuracy
Where things are:
  demo/data/manifest.jsonl    the demo posts (demo/data/images/)
  demo/features/              the feature cache
  demo/run/                   the trained run (config.json, model.safetensors, run.json)
  demo/run/eval/              metrics.json, confusion.png, tsne.png
  demo/predictions.csv        every post's prediction, with its split and true label
  demo/profiles/              profiles.json, profiles.parquet, profiles.png, profiles-time.png:
                              the early bird at the gym at 6-7, at work by 9, home at 21
Next:
  .venv/bin/sgmft serve demo/run                 # then open http://127.0.0.1:8000/
  .venv/bin/sgmft predict demo/run --text "..." --image PATH
  docs/tutorial.md                               # the same with your own posts
SUMMARY
