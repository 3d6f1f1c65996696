"""What bench/gpu_check.sh runs on a lent GPU machine imports there: only its packages, the
carried wheels and this project (bench/device_imports.py refuses anything else). A module of the
engine that starts importing the database, queue or object-store clients fails here, not in the
one short call a lent GPU allows.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CUDA_TESTS = ["tests/engine/test_fused_cuda.py", "tests/engine/test_packing_cuda.py", "tests/engine/test_resident_cuda.py"]
SCRIPTS = ["bench/bench_trainer.py", "bench/paper_run.py", "bench/sweep_modes.py", "bench/resident_data.py"]


def device_only(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "bench/device_imports.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_gpu_check_runs_every_cuda_test_and_script_named_here():
    script = (ROOT / "bench/gpu_check.sh").read_text()
    assert all(name in script for name in CUDA_TESTS + SCRIPTS)


def test_the_cuda_tests_import_with_only_what_the_gpu_machine_has():
    done = device_only("-m", "pytest", "--collect-only", "-q", "--noconftest", "-p", "no:cacheprovider", *CUDA_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(CUDA_TESTS)} tests collected" in done.stdout, done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_gpu_benchmarks_import_with_only_what_the_gpu_machine_has(script):
    done = device_only(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
