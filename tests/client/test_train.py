"""`noisyfit train`: the installed command runs the real engine on real Fashion-MNIST (the files
of Debian's dataset-fashion-mnist), tiny sizes, into a local folder."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from client.cli import main
from worker.datasets import SYSTEM_DATA_DIRS

NOISYFIT = Path(sys.executable).parent / "noisyfit"
ARTIFACTS = {"checkpoint.pt", "metrics.jsonl", "noisy_labels.npz", "plot.png", "result.json", "resume.pt",
             "suspected_mislabels.csv"}  # fmt: skip
TINY = ["--train-size", "100", "--set", "eval_batch_size=2000", "--device", "cpu"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the command: a fresh data set cache; the files come from the system's folder."""
    if not (SYSTEM_DATA_DIRS[0] / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("the Debian package dataset-fashion-mnist is not installed: run scripts/setup.sh")
    return {**os.environ, "NOISYFIT_DATA_DIR": str(tmp_path_factory.mktemp("data"))}


def noisyfit(*argv: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(NOISYFIT), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_train_runs_a_spec_file_with_flags_into_a_folder(env: dict[str, str], tmp_path: Path):
    (tmp_path / "spec.json").write_text(json.dumps({"dataset": "fashion-mnist", "loss": "ce", "epochs": 3}))
    argv = ["train", "spec.json", "--loss", "nce+rce", "--noise", "symmetric:0.2", "--set", "epochs=1", *TINY]
    done = noisyfit(*argv, "--out", "run", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "no progress bars and no warnings when the output is no terminal"

    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["spec"]["loss"] == "nce+rce" and result["spec"]["epochs"] == 1, "the flags win over the file"
    assert result["spec"]["noise"]["rate"] == 0.2 and result["samples"]["train"] == 100
    assert ARTIFACTS <= {p.name for p in (tmp_path / "run").iterdir()}

    epoch, final = done.stdout.splitlines()
    test = f"{100 * result['history'][0]['test_acc']:.2f}%"
    assert re.fullmatch(rf"epoch 1/1 \[#{{24}}\] loss \d+\.\d{{4}}  train \d+\.\d\d%  test {test}  memorised .*%", epoch)
    best = f"{100 * result['best_test_accuracy']:.2f}%"
    assert final == f"final test accuracy {test}, best {best}; artifacts in run", "percent for people"


def test_the_readme_command_line_runs_with_flags_alone(env: dict[str, str], tmp_path: Path):
    """The README's `noisyfit train --dataset ... --noise symmetric:0.6 ... --out runs/nce+rce`, shrunk."""
    argv = ["train", "--dataset", "fashion-mnist", "--loss", "nce+rce", "--noise", "symmetric:0.6", "--epochs", "1"]
    done = noisyfit(*argv, *TINY, "--out", "runs/nce+rce", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith("; artifacts in runs/nce+rce")
    result = json.loads((tmp_path / "runs" / "nce+rce" / "result.json").read_text())
    assert result["spec"]["noise"] == {"type": "symmetric", "rate": 0.6, "matrix": []}

    again = noisyfit(*argv, *TINY, "--out", "runs/nce+rce", "--json", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed_from_epoch"] == 1, "the same command resumes the finished run"
    assert again.stderr == "", "nothing left to train: no epoch line"

    labels_before = (tmp_path / "runs" / "nce+rce" / "noisy_labels.npz").read_bytes()
    other = noisyfit(*argv, *TINY, "--seed", "1", "--out", "runs/nce+rce", env=env, cwd=tmp_path)
    assert other.returncode == 2
    assert "runs/nce+rce holds a run of another spec" in other.stderr and "seed" in other.stderr
    assert (tmp_path / "runs" / "nce+rce" / "noisy_labels.npz").read_bytes() == labels_before, "the old run is intact"


def test_ctrl_c_stops_at_the_next_step_and_keeps_the_resume_point(env: dict[str, str], tmp_path: Path):
    argv = ["train", "--dataset", "fashion-mnist", "--epochs", "50", *TINY, "--out", "run"]
    process = subprocess.Popen([str(NOISYFIT), *argv], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        first = process.stdout.readline()
        assert first.startswith("epoch 1/50 "), first + process.stderr.read()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 130, err
    stopped = re.fullmatch(r"stopped after (\d+) epochs; run the same command again to resume\n", out.splitlines(True)[-1])
    assert stopped and 1 <= int(stopped[1]) < 50
    assert (tmp_path / "run" / "resume.pt").is_file() and not (tmp_path / "run" / "result.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "fashion-mnist", "--noise", "symmetric:0.95"], "noise.rate"),
        (["--dataset", "fashion-mnist", "--loss", "ce+mae"], "not robust"),
        (["--dataset", "fashion-mnist", "--set", "lerning_rate=0.1"], "lerning_rate"),
        (["--dataset", "fashion-mnist", "--noise", "symmetric:lots"], "write TYPE:RATE"),
        (["missing.json"], "cannot read missing.json"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_writes_nothing(argv, message, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path / "never")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
