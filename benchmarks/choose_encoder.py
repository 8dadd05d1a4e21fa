"""Which offline text encoder to make the default: e5 or USE, by accuracy on real data.

    python benchmarks/choose_encoder.py --data ../shared/data/mvsa-lab5/labels.jsonl \
        --labels positive,negative,neutral [--seeds 3]

For each pair encoder: extract (or reuse) features, then on the same stratified split report
(a) a logistic regression on the text features alone, the cleanest measure of the text
encoder, and (b) SG-MFT with the `fast` preset over N seeds (mean +- std).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from sgmft.evaluation.evaluate import evaluate_run
from sgmft.training.config import resolve_config
from sgmft.training.prepare import prepare_data
from sgmft.training.run import train_run


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--encoders", default="e5+effnet,use+effnet")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else None
    for encoder in args.encoders.split(","):
        config = resolve_config("fast", [f"data.manifest={args.data}", "data.skip_invalid=true",
                                         f"data.encoder={encoder}"])
        config.data.labels = labels
        prepared = prepare_data(config, progress=False)
        index = {i: n for n, i in enumerate(prepared.cache.ids)}
        label_of = {p.id: p.label for p in prepared.manifest.posts}
        train, test = prepared.split["train"], prepared.split["test"]
        x_train = prepared.cache.text[[index[i] for i in train]]
        x_test = prepared.cache.text[[index[i] for i in test]]
        y_train = np.array([label_of[i] for i in train])
        y_test = np.array([label_of[i] for i in test])
        probe = LogisticRegression(max_iter=2000, C=1.0).fit(x_train, y_train)
        predicted = probe.predict(x_test)
        print(f"{encoder}: text-only logistic regression accuracy "
              f"{accuracy_score(y_test, predicted):.4f}, macro-F1 "
              f"{f1_score(y_test, predicted, average='macro'):.4f}", flush=True)
        scores = []
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(args.seeds):
                config.train.seed = seed
                folder = train_run(config, Path(tmp) / f"seed{seed}", prepared, progress=False)
                metrics = evaluate_run(folder, prepared, figures=False)
                scores.append((metrics["accuracy"], metrics["macro_f1"]))
        acc = [s[0] for s in scores]
        f1 = [s[1] for s in scores]
        print(f"{encoder}: SG-MFT (fast preset, {args.seeds} seeds) accuracy "
              f"{statistics.fmean(acc):.4f} ± {_spread(acc):.4f}, macro-F1 "
              f"{statistics.fmean(f1):.4f} ± {_spread(f1):.4f}", flush=True)


if __name__ == "__main__":
    main()
