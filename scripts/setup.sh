#!/usr/bin/env bash
# Create .venv and install sgmft with everything it needs (CPU torch pinned in the same command,
# so that no dependency can pull a CUDA build). Safe to run again.
#   --with-browser  also install Debian's chromium, chromium-driver and fonts-noto-cjk (the web
#                   page's browser test, with Chinese text rendered)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
say() { echo "setup: $*"; }
if [ ! -x .venv/bin/python ]; then say "creating .venv"; "$PYTHON" -m venv .venv; fi
say "upgrading pip"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
say "installing sgmft with torch 2.13.0 (CPU), serving, export, Ray and test extras (a few minutes the first time)"
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 -e ".[serve,export,ray,dev]" \
  2>&1 | { grep -v "^WARNING: Location" || true; }   # (pipefail: a pip failure still fails)
say "installing the official Chinese-CLIP code without its dependencies (the equivalence tests; it needs torchvision only for image transforms sgmft does not use)"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps cn-clip==1.6.0 \
  2>&1 | { grep -v "^WARNING: Location" || true; }
.venv/bin/python -c "import torch, sgmft; assert '+cpu' in torch.__version__ or not torch.cuda.is_available(); print('setup: sgmft', sgmft.__version__, 'torch', torch.__version__)"
if [ "${1:-}" = "--with-browser" ] && ! { command -v chromium && command -v chromedriver \
    && fc-list 2>/dev/null | grep -qi "noto sans cjk"; } >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  say "installing Debian's chromium, chromium-driver and fonts-noto-cjk (for the browser test)"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver fonts-noto-cjk >/dev/null
  # Debian's launcher sources /etc/chromium.d/dev-shm, whose test prints "[: ...: unexpected
  # operator" on some machines: harmless, so the version is asked of it with stderr quiet
  chromium --version 2>/dev/null
fi
say "done; run commands with .venv/bin/sgmft, or 'source .venv/bin/activate' first and then sgmft"
