#!/usr/bin/env bash
# Create .venv and install sgmft with everything it needs (CPU torch pinned in the same command,
# so that no dependency can pull a CUDA build). Safe to run again.
#   --with-browser  also install Debian's chromium and chromium-driver (the web page's browser test)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 -e ".[serve,export,dev]"
.venv/bin/python -c "import torch, sgmft; assert '+cpu' in torch.__version__ or not torch.cuda.is_available(); print('sgmft', sgmft.__version__, 'torch', torch.__version__)"
if [ "${1:-}" = "--with-browser" ] && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver >/dev/null
  chromium --version
fi
