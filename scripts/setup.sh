#!/usr/bin/env bash
# Installs what noisyfit needs on a fresh Debian machine: the Fashion-MNIST files and a
# virtual environment (.venv) with the project, the worker extras and the test tools.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# Fashion-MNIST for the tests and demos; redis-server for the dev stack and the Redis-outage tests;
# chromium for the dashboard's browser tests (Playwright drives it; its own browser download is not used).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || ! command -v redis-server >/dev/null \
   || ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist redis-server chromium
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# A marker holding pyproject.toml's hash: the next run skips pip unless the dependencies changed.
wanted="digest = '$(sha256sum pyproject.toml | cut -d' ' -f1)'"
if [ "$(.venv/bin/python -c 'import noisyfit_installed as m; print(f"digest = {m.digest!r}")' 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[worker,test]'
  echo "$wanted" > "$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')/noisyfit_installed.py"
fi
