#!/usr/bin/env bash
# Create .venv and install sgmft with everything it needs (CPU torch pinned in the same command,
# so that no dependency can pull a CUDA build). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 -e ".[serve,export,dev]"
.venv/bin/python -c "import torch, sgmft; assert '+cpu' in torch.__version__ or not torch.cuda.is_available(); print('sgmft', sgmft.__version__, 'torch', torch.__version__)"
