#!/usr/bin/env bash
# Start the demo: JupyterLab on the widget notebook, offline (no Azure needed).
#
# Prints ONE link that opens notebooks/04_widget.ipynb directly, token included.
# JupyterLab listens on 127.0.0.1 only; from another machine forward the port:
#   ssh -L PORT:127.0.0.1:PORT you@this-machine   and open the same link.
# The notebooks run from a scratch copy (CXR_DEMO_DIR, default .demo/, ignored
# by git), so the committed notebooks stay clean; your edits there are kept
# between starts (delete the folder to start fresh).
# PORT: 8888 by default, or the next free port if that one is taken. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
source scripts/_venv.sh
PY=.venv/bin/python

DEMO_DIR="${CXR_DEMO_DIR:-$REPO/.demo}"
mkdir -p "$DEMO_DIR/notebooks" "$DEMO_DIR/jupyter-config/labconfig"
for nb in notebooks/*.ipynb; do
  [ -e "$DEMO_DIR/$nb" ] || cp "$nb" "$DEMO_DIR/$nb"
done
ln -sfn "$REPO/docs" "$DEMO_DIR/docs"  # the notebooks' pictures (../docs/images)

# No "Jupyter news" pop-up: --LabApp.news_url=None does not stop it in JupyterLab 4;
# disabling the plugin that asks does. Added to the config path, not your own config.
cat > "$DEMO_DIR/jupyter-config/labconfig/page_config.json" <<'JSON'
{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}
JSON
export JUPYTER_CONFIG_PATH="$DEMO_DIR/jupyter-config${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"

PORT="$("$PY" - "${PORT:-8888}" <<'PYTHON'
import socket, sys
wanted = int(sys.argv[1])
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
if not free(wanted):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        wanted = s.getsockname()[1]
print(wanted)
PYTHON
)"
TOKEN="$("$PY" -c 'import secrets; print(secrets.token_hex(24))')"
NOTEBOOK="notebooks/04_widget.ipynb"

LOG="$DEMO_DIR/jupyter.log"
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)
.venv/bin/jupyter lab --ip=127.0.0.1 --port="$PORT" --no-browser \
  --ServerApp.port_retries=0 \
  --IdentityProvider.token="$TOKEN" \
  --ServerApp.root_dir="$DEMO_DIR" \
  --LabApp.news_url=None \
  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
  "${extra[@]}" >"$LOG" 2>&1 &
LAB=$!
trap 'kill "$LAB" 2>/dev/null || true; wait "$LAB" 2>/dev/null || true' INT TERM EXIT

# Print the link only once the server answers (a link that fails is worse than a short wait).
for _ in $(seq 1 240); do
  if ! kill -0 "$LAB" 2>/dev/null; then
    echo "JupyterLab stopped while starting; its log ($LOG) ends with:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  if "$PY" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:${PORT}/api/status?token=${TOKEN}" 2>/dev/null; then
    break
  fi
  sleep 0.25
done

echo "==> cxr-widgets demo, offline: Microsoft's sample study gets its recorded CXRReportGen"
echo "    answer, any other study canned DEMO findings. For research only, not for clinical use."
echo "    Notebooks run from a copy in $DEMO_DIR; server log: $LOG"
echo "    On a remote machine, first: ssh -L ${PORT}:127.0.0.1:${PORT} <you>@<this machine>"
echo
echo "    Open: http://127.0.0.1:${PORT}/lab/tree/${NOTEBOOK}?token=${TOKEN}"
echo
echo "    (Ctrl-C stops the demo.)"
wait "$LAB"
