"""scripts/devstack.py: one command runs the whole service; its printed curl submits a job; Ctrl-C stops it."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import httpx

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import FINISHED, wait_until


def devstack_env(**overrides: str) -> dict[str, str]:
    """This machine's environment without the test session's NOISYFIT_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISYFIT_")}
    return env | overrides


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_devstack_runs_the_service_and_stops_everything_on_ctrl_c(tmp_path):
    """Nothing answers at NOISYFIT_REDIS_URL, so it starts redis-server too; SQLite and rclone S3 by default."""
    port, s3_port, redis_port = free_port(), free_port(), free_port()
    args = ["--port", str(port), "--s3-port", str(s3_port), "--state", str(tmp_path)]
    stack = subprocess.Popen(
        [sys.executable, "scripts/devstack.py", *args],
        cwd=ROOT, env=devstack_env(NOISYFIT_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    watchdog = threading.Timer(600, stack.kill)
    watchdog.start()
    try:
        printed = []
        for line in stack.stdout:
            printed.append(line.rstrip("\n"))
            if line.startswith("curl -sS -X POST"):
                break
        assert stack.poll() is None, "\n".join(printed)
        key = next(line.split("=", 1)[1] for line in printed if line.startswith("export NOISYFIT_API_KEY="))
        assert f"export NOISYFIT_API_URL=http://127.0.0.1:{port}" in printed

        answer = subprocess.run(["bash", "-c", printed[-1]], capture_output=True, text=True, timeout=60, check=True)
        job = json.loads(answer.stdout)
        assert job["status"] == "queued" and job["spec"]["dataset"] == "fashion-mnist"

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as http:
            finished = wait_until(lambda: (j := http.get(f"/v1/jobs/{job['id']}").json())["status"] in FINISHED and j,
                                  400, "the devstack's job to finish", interval_s=1)
            assert finished["status"] == "succeeded", finished["error"]
            names = {a["name"] for a in http.get(f"/v1/jobs/{job['id']}/artifacts").json()["artifacts"]}
            assert {"checkpoint.pt", "result.json"} <= names
        assert (tmp_path / "noisyfit.db").exists() and (tmp_path / "s3").is_dir()

        stack.send_signal(signal.SIGINT)
        assert stack.wait(60) == 0
        assert not any(listening(p) for p in (port, s3_port, redis_port)), "every process it started is gone"
    finally:
        watchdog.cancel()
        if stack.poll() is None:
            stack.kill()
            stack.wait()


def test_devstack_says_how_to_install_redis_when_it_has_none(tmp_path):
    python_only = os.path.dirname(sys.executable)  # the venv's bin: python and rclone, no redis-server
    done = subprocess.run(
        [sys.executable, "scripts/devstack.py", "--port", str(free_port()), "--state", str(tmp_path)],
        cwd=ROOT, env=devstack_env(NOISYFIT_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PATH=python_only),
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "apt-get install redis-server" in done.stderr
