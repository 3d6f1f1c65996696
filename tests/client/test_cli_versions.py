"""`noisyfit datasets version` and `noisyfit datasets lineage`, the installed command against a
real API process (uvicorn, PostgreSQL, Redis, S3), on a finished job stored as a worker leaves it."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from client.http import NoisyfitClient
from shared.settings import Settings
from tests.conftest import ROOT, store_trained_job

Run = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def cli(live_api, settings: Settings, admin_headers: dict[str, str], tmp_path: Path) -> tuple[Run, str, int]:
    """(noisyfit(*argv) → the finished process, the user's key, the user's id)."""
    created = httpx.post(f"{live_api.url}/v1/api-keys", json={"name": "cli-versions"}, headers=admin_headers,
                         timeout=30).json()
    env = {"NOISYFIT_API_URL": live_api.url, "NOISYFIT_API_KEY": created["key"], "PATH": "/usr/bin:/bin",
           "XDG_CONFIG_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}  # this checkout's code behind the entry point

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).parent / "noisyfit"), *argv], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60)

    return run, created["key"], created["user_id"]


def test_a_version_from_a_job_retrained_then_reviewed_and_its_lineage(cli, live_api, settings: Settings,
                                                                      tmp_path: Path):
    run, key, user_id = cli
    clean = np.arange(60000) % 10
    noisy = clean.copy()
    noisy[100:110] = (clean[100:110] + 1) % 10
    job_id = store_trained_job(
        settings, user_id, {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "epochs": 1,
                            "loss": "nce+rce", "train_size": 200}, noisy=noisy, clean=clean,
        train_indices=np.arange(100, 300), val_indices=np.array([], dtype=np.int64),
        suspects=[{"index": i, "noisy_label": noisy[i], "predicted": clean[i], "confidence": 0.6 + i / 1000,
                   "loss": 2.0, "rank": i} for i in range(100, 110)])

    done = run("datasets", "version", "fashion-mnist", "--from-job", job_id, "--threshold", "0.7", "--retrain",
               "--json")
    assert done.returncode == 0, done.stderr
    fixed = json.loads(done.stdout)
    assert (fixed["relabelled"], fixed["train_samples"], fixed["source_job"]) == (10, 200, job_id)
    assert fixed["job"]["spec"]["dataset"] == fixed["id"] and fixed["job"]["spec"]["noise"]["type"] == "none"

    decisions = tmp_path / "decisions.csv"
    decisions.write_text("index,label,confidence\n0,3,0.9\n1,,0.8\n2,-1,0.7\n5,9,0.6\n")
    done = run("datasets", "version", fixed["id"], "--changes", str(decisions), "--name", "reviewed")
    assert done.returncode == 0, done.stderr
    reviewed_id = done.stdout.split()[2]
    assert done.stdout == f"made version {reviewed_id} of {fixed['id']}: 198 samples, 2 relabelled, 2 dropped\n"
    with NoisyfitClient(live_api.url, key) as nf:
        assert nf.dataset_changes(reviewed_id)["relabel"] == [[0, 3], [5, 9]]
        assert nf.dataset_changes(reviewed_id)["drop"] == [1, 2]
        nf.cancel(fixed["job"]["id"])

    done = run("datasets", "lineage", reviewed_id)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "fashion-mnist  (builtin)"
    assert lines[1].startswith(f"    job {job_id}  succeeded  test 50.00%")
    assert lines[2].startswith(f"  └ {fixed['id']}  ") and lines[2].endswith(f"from job {job_id}")
    assert lines[3].startswith(f"      job {fixed['job']['id']}  cancelled")
    assert lines[4] == f"    └ {reviewed_id}  'reviewed'  198 samples, 2 relabelled, 2 dropped"

    listed = run("datasets", "list")
    assert f"{reviewed_id}  reviewed  10 classes  198 samples  version of {fixed['id']}" in listed.stdout


@pytest.mark.parametrize("content, argv, code, words", [
    ("index,label\n1,x\n", [], 2, "line 2: index and label must be integers"),
    ("i,l\n1,2\n", [], 2, "header with the columns index,label"),
    ("index,label\n", [], 2, "holds no decisions"),
    ("index,label\n1,2\n", ["--threshold", "0.5"], 2, "leave them out"),
    ("index,label\n60000,2\n", [], 1, "[HTTP 422 invalid_version]"),
])
def test_bad_decisions_are_one_line_on_stderr(cli, tmp_path: Path, content: str, argv: list[str], code: int,
                                              words: str):
    run, _, _ = cli
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(content)
    done = run("datasets", "version", "fashion-mnist", "--changes", str(decisions), *argv)
    assert (done.returncode, done.stdout) == (code, "")
    assert done.stderr.startswith("noisyfit: ") and done.stderr.count("\n") == 1 and words in done.stderr, done.stderr


def test_version_needs_a_job_or_decisions(cli):
    run, _, _ = cli
    done = run("datasets", "version", "fashion-mnist")
    assert done.returncode == 2 and "--from-job JOB" in done.stderr and "--changes CSV" in done.stderr
