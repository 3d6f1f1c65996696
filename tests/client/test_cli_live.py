"""The `noisyfit` command against a real API process (uvicorn, PostgreSQL, Redis, S3)."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from client.cli import main
from client.http import NoisyfitClient


@pytest.fixture
def noisyfit(live_api, make_user: Callable[..., dict], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys):
    """noisyfit(*argv) → (exit code, stdout, stderr), as a fresh user of the live API."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in ("NOISYFIT_CONFIG", "NOISYFIT_API_URL", "NOISYFIT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    key = make_user("cli")["Authorization"].removeprefix("Bearer ")

    def run(*argv: str, api_key: str = key) -> tuple[int, str, str]:
        code = main(["--api-url", live_api.url, "--api-key", api_key, *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run.key = key
    return run


def test_submit_status_list_cancel_and_follow_a_job(noisyfit, live_api):
    code, out, err = noisyfit(
        "submit", "--dataset", "mnist", "--loss", "nce+rce", "--noise", "symmetric:0.4",
        "--epochs", "1", "--train-size", "200", "--idempotency-key", "cli-live-1", "--json",
    )
    assert code == 0, err
    job = json.loads(out)
    assert job["status"] == "queued"
    assert job["spec"]["beta"] == 10.0, "the resolved spec: MNIST's preset for nce+rce"

    code, out, _ = noisyfit("status", job["id"])
    assert code == 0
    assert out.splitlines()[:2] == [
        f"job {job['id']}  queued",
        "  mnist · nce+rce · symmetric 0.4 · 1 epochs · seed 0",
    ]

    code, out, _ = noisyfit("list")
    assert code == 0 and out.splitlines()[1].startswith(f"{job['id']}  queued")

    code, out, _ = noisyfit("cancel", job["id"])
    assert (code, out) == (0, f"job {job['id']}: cancelled\n")

    with NoisyfitClient(live_api.url, noisyfit.key, timeout=10) as nf:
        events = list(nf.events(job["id"]))  # Server-Sent Events, ending at done
    assert [(e["type"], e.get("status")) for e in events][-2:] == [("status", "cancelled"), ("done", "cancelled")]

    code, out, _ = noisyfit("watch", job["id"])
    assert code == 1, "a watched job that did not succeed"
    assert out.startswith(f"job {job['id']}  cancelled")


def test_catalog(noisyfit):
    code, out, _ = noisyfit("catalog")
    assert code == 0
    assert out.startswith("data sets: mnist, fashion-mnist, cifar10, cifar100")
    assert "sweep presets: table2, table3, alpha-beta" in out


@pytest.mark.parametrize(
    "argv, status_code",
    [
        (["submit", "--dataset", "mnits"], "422 invalid_spec"),
        (["submit", "--dataset", "mnist", "--noise", "symmetric:0.95"], "422 invalid_spec"),
        (["status", "no-such-job"], "404 not_found"),
    ],
)
def test_http_errors_are_one_line_and_exit_1(noisyfit, argv: list[str], status_code: str):
    code, out, err = noisyfit(*argv)
    assert code == 1 and out == ""
    assert err.startswith("noisyfit: error: ") and err.count("\n") == 1
    assert err.rstrip().endswith(f"[HTTP {status_code}]")


def test_a_wrong_key_is_refused(noisyfit):
    code, _, err = noisyfit("list", api_key="nf_not-a-key")
    assert code == 1 and "[HTTP 401 unauthorized]" in err


def test_the_installed_command(noisyfit, live_api):
    command = Path(sys.executable).parent / "noisyfit"
    env = {"NOISYFIT_API_URL": live_api.url, "NOISYFIT_API_KEY": noisyfit.key, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(command), "catalog", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "nce+rce" in json.loads(done.stdout)["presets"]["mnist"]


def test_output_into_a_closed_pipe_exits_quietly(noisyfit, live_api):
    """As `noisyfit catalog | head -1` once head has left: no traceback, the shell's status 141."""
    command = Path(sys.executable).parent / "noisyfit"
    env = {**os.environ, "NOISYFIT_API_URL": live_api.url, "NOISYFIT_API_KEY": noisyfit.key}
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([str(command), "catalog"], stdout=write, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=60)  # fmt: skip
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
