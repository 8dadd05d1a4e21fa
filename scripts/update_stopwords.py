"""Regenerate src/sgmft/text/stopwords/{zh,en}.txt from the stopwordsiso package (dev extra)."""

from pathlib import Path

import stopwordsiso

OUT = Path(__file__).resolve().parents[1] / "src" / "sgmft" / "text" / "stopwords"
HEADER = (
    "# stopwords-iso '{lang}' list (https://github.com/stopwords-iso/stopwords-iso), MIT licence,\n"
    "# from the stopwordsiso {version} package; regenerate with scripts/update_stopwords.py\n"
)

for lang in ("zh", "en"):
    words = sorted(stopwordsiso.stopwords(lang))
    version = stopwordsiso.__version__ if hasattr(stopwordsiso, "__version__") else "0.7.1"
    text = HEADER.format(lang=lang, version=version) + "\n".join(words) + "\n"
    (OUT / f"{lang}.txt").write_text(text, encoding="utf-8")
    print(lang, len(words))
