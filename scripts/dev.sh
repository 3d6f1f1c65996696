#!/usr/bin/env bash
# Runs the whole service on this machine without Docker: API, one worker, an S3 server,
# Redis (the machine's, or one it starts) and SQLite. Prints the URL, an API key and a curl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/devstack.py "$@"
