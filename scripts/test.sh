#!/usr/bin/env bash
# Runs the whole test suite against the machine's PostgreSQL and Redis (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
