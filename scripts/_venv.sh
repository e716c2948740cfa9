# Sourced by scripts/demo.sh and scripts/test.sh: make .venv and install the
# project with its test/demo extras. Re-installs only when pyproject.toml changes.
set -euo pipefail

PYTHON_BIN="${PYTHON:-python3}"
if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "cxr-widgets needs Python 3.10 or newer; set PYTHON=/path/to/python3.x" >&2
  exit 2
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $("$PYTHON_BIN" --version)"
  "$PYTHON_BIN" -m venv .venv
fi

stamp=.venv/.cxr-widgets-installed
# Reinstall when the project's requirements or the JupyterLab extension's sources change.
want=$(cat pyproject.toml labextension/package.json labextension/src/*.ts labextension/style/* \
  | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "cxr-widgets builds its JupyterLab extension with Node.js 18+ and npm, which are" >&2
    echo "not on PATH. Install them (Debian/Ubuntu: apt-get install -y nodejs npm) and run again." >&2
    exit 2
  fi
  rm -rf cxr_widgets/labextension/static_build  # rebuilt from labextension/ by the install
  echo "==> installing cxr-widgets and its dependencies into .venv (about a minute)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  echo "$want" > "$stamp"
fi
