#!/usr/bin/env bash
# The wheels the lent GPU machine lacks for the engine's import path (Python 3.12, x86-64; it
# has torch, torchvision, numpy, matplotlib and pytest, but no pydantic or redis), into .whl/ at
# the repository's root, which git ignores (.git/info/exclude). Run it here, with network, once
# before bench/gpu_check.sh runs on the GPU machine with `.whl` carried.
#
#     bash bench/fetch_wheels.sh [PYTHON]      # PYTHON: a python with pip (default: python3)
#
# The versions are the ones this checkout's environment runs with (pip freeze of PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
packages=(pydantic pydantic-core annotated-types typing-inspection typing-extensions pydantic-settings python-dotenv redis)
pins=()
for package in "${packages[@]}"; do
    version=$("$python" -m pip show "$package" 2>/dev/null | sed -n 's/^Version: //p')
    [[ -n "$version" ]] || { echo "$python has no $package; pass a python that runs noisyfit" >&2; exit 1; }
    pins+=("$package==$version")
done
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
rm -rf .whl && mkdir .whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"
ls -1 .whl
du -sh .whl
