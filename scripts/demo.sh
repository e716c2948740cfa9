#!/usr/bin/env bash
# Start the demo: JupyterLab on the widget notebook, on the offline demo
# backend (no Azure needed). PORT=8888 by default; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh

PORT="${PORT:-8888}"
NOTEBOOK="notebooks/04_widget.ipynb"
echo "==> JupyterLab on http://127.0.0.1:${PORT}/lab/tree/${NOTEBOOK}"
echo "    (demo backend: canned findings, research use only)"
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)
exec .venv/bin/jupyter lab --ip=127.0.0.1 --port="$PORT" \
  --LabApp.news_url=None \
  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
  "${extra[@]}" "$NOTEBOOK"
