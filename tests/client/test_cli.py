"""The `noisyfit` command: argument parsing, output, exit codes, against a scripted API."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import client.cli
import client.http
from client.cli import build_parser, main
from client.http import NoisyfitClient
from client.spec_flags import parse_noise, spec_from_args
from shared.catalog import PAPER_GRIDS, PAPER_LOSSES
from tests.client.conftest import FakeApi, error, event_stream, job, sse


@pytest.fixture
def cli(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApi:
    """`main` talks to the fake API; the environment gives the key, no config file is read."""
    transport = httpx.MockTransport(fake_api)
    fake = lambda url, key, timeout: NoisyfitClient(url, key, timeout, transport=transport)  # noqa: E731
    monkeypatch.setattr(client.cli, "NoisyfitClient", fake)
    monkeypatch.setattr(client.http, "RECONNECT_DELAY_S", 0.0)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("NOISYFIT_CONFIG", raising=False)
    monkeypatch.delenv("NOISYFIT_API_URL", raising=False)
    monkeypatch.setenv("NOISYFIT_API_KEY", "env-key")
    return fake_api


def parse(*argv: str):
    return build_parser().parse_args(argv)


# Parsing


def test_spec_flags_override_the_file_and_set_reaches_nested_fields():
    args = parse(
        "submit", "spec.json", "--dataset", "cifar10", "--loss", "nce+rce", "--noise", "asymmetric:0.4",
        "--epochs", "5", "--seed", "2", "--set", "loss_params.q=0.1", "--set", "nesterov=true",
        "--set", "augment=none", "--set", "noise.rate=0.3", "--deterministic",
    )
    spec = spec_from_args(args, {"dataset": "mnist", "alpha": 10.0, "loss_params": {"gamma": 0.5}})
    assert spec == {
        "dataset": "cifar10", "loss": "nce+rce", "alpha": 10.0, "epochs": 5, "seed": 2,
        "noise": {"type": "asymmetric", "rate": 0.3}, "loss_params": {"gamma": 0.5, "q": 0.1},
        "nesterov": True, "augment": "none", "deterministic": True,
    }
    off = spec_from_args(parse("submit", "--no-deterministic"), {"dataset": "mnist", "deterministic": True})
    assert off == {"dataset": "mnist", "deterministic": False}
    assert "deterministic" not in spec_from_args(parse("submit", "--dataset", "mnist"))


def test_submit_sweep_submit_and_train_read_the_same_spec_flags(tmp_path: Path):
    flags = ["--dataset", "mnist", "--loss", "nce+rce", "--noise", "pairflip:0.3", "--train-size", "500",
             "--lr", "0.05", "--set", "loss_params.q=0.7"]  # fmt: skip
    specs = [
        spec_from_args(parse("submit", *flags)),
        spec_from_args(parse("sweep", "submit", *flags, "--grid", "seed=0,1")),
        spec_from_args(parse("train", *flags, "--out", str(tmp_path))),
    ]
    expected = {"dataset": "mnist", "loss": "nce+rce", "noise": {"type": "pairflip", "rate": 0.3},
                "train_size": 500, "lr": 0.05, "loss_params": {"q": 0.7}}  # fmt: skip
    assert specs == [expected] * 3


def test_noise_flags(tmp_path: Path):
    assert parse_noise("symmetric:0.6") == {"type": "symmetric", "rate": 0.6}
    assert parse_noise("none") == {"type": "none", "rate": 0.0}
    matrix = tmp_path / "t.json"
    matrix.write_text("[[0.8, 0.2], [0.3, 0.7]]")
    assert parse_noise(f"transition:{matrix}") == {"type": "transition", "matrix": [[0.8, 0.2], [0.3, 0.7]]}


def test_connection_options_go_before_or_after_the_command():
    before = parse("--api-url", "http://a:1", "--json", "status", "j1")
    after = parse("status", "j1", "--api-url", "http://a:1", "--json")
    plain = parse("status", "j1")
    assert (before.api_url, before.json) == (after.api_url, after.json) == ("http://a:1", True)
    assert (plain.api_url, plain.json, plain.timeout) == (None, False, 30.0)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["status"], "required: id"),
        (["frobnicate"], "invalid choice"),
        (["submit", "--noise", "symmetric"], "write TYPE:RATE"),
        (["submit", "--loss", "ce"], "needs a SPEC.json file or --dataset"),
        (["train", "--loss", "ce", "--out", "never"], "train needs a SPEC.json file or --dataset"),
        (["train", "--dataset", "mnist"], "required: --out"),
        (["submit", "missing.json"], "cannot read missing.json"),
        (["submit", "--dataset", "mnist", "--set", "epochs"], "write KEY=VALUE"),
        (["sweep", "submit", "--preset", "table9", "--dataset", "mnist"], "invalid choice"),
        (["sweep", "submit", "--preset", "table2"], "--preset needs --dataset"),
        (["sweep", "submit", "--dataset", "mnist", "--grid", "lossy=ce,gce"], "'lossy' is not a field"),
        (["sweep", "submit", "--dataset", "mnist"], "needs a grid"),
    ],
)
def test_usage_errors_exit_2_with_the_problem(cli: FakeApi, capsys: pytest.CaptureFixture, argv: list[str], words: str):
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert cli.requests == [], "nothing was sent"


def test_a_missing_key_is_a_usage_error(cli: FakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.delenv("NOISYFIT_API_KEY")
    assert main(["status", "j1"]) == 2
    assert "no API key" in capsys.readouterr().err


# Commands against the scripted API


def test_submit_sends_the_spec_and_prints_the_job(cli: FakeApi, capsys: pytest.CaptureFixture):
    cli.route("POST", "/v1/jobs", lambda r: httpx.Response(201, json=job(spec=json.loads(r.content))))
    argv = ["submit", "--dataset", "mnist", "--loss", "nce+rce", "--noise", "symmetric:0.6", "--idempotency-key", "k1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("submitted job j1 (queued): mnist · nce+rce · symmetric 0.6")
    request = cli.requests[0]
    noise = {"type": "symmetric", "rate": 0.6}
    assert json.loads(request.content) == {"dataset": "mnist", "loss": "nce+rce", "noise": noise}
    assert request.headers["idempotency-key"] == "k1" and request.headers["authorization"] == "Bearer env-key"


def test_an_http_error_is_one_line_on_stderr_and_exit_1(cli: FakeApi, capsys: pytest.CaptureFixture):
    cli.route("POST", "/v1/jobs", lambda r: error(422, "invalid_spec", "unknown dataset 'mnits'", "dataset"))
    assert main(["submit", "--dataset", "mnits"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "noisyfit: error: unknown dataset 'mnits' (field: dataset) [HTTP 422 invalid_spec]\n"


def test_status_prints_progress_and_json_prints_the_job(cli: FakeApi, capsys: pytest.CaptureFixture):
    running = job(
        status="running", attempts=1, created_at="2024-05-01T10:00:00Z",
        progress={"epoch": 2, "epochs": 3, "metrics": {"test_acc": 0.8812, "train_acc": 0.5}},
    )
    cli.route("GET", "/v1/jobs/j1", running)
    assert main(["status", "j1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "job j1  running  (attempt 1)",
        "  mnist · nce+rce · symmetric 0.4 · 3 epochs · seed 0",
        "  epoch 2/3  test 88.12%  train 50.00%",
        "  created 2024-05-01T10:00:00Z",
    ]
    assert main(["status", "j1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == running


def test_list_prints_a_table_and_the_next_cursor(cli: FakeApi, capsys: pytest.CaptureFixture):
    done = job("j2", "succeeded", result={"final_test_accuracy": 0.9})
    cli.route("GET", "/v1/jobs", {"jobs": [done, job()], "next": "abc"})
    assert main(["list", "--status", "succeeded"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "JOB", "EPOCH", "TEST", "ACC", "CREATED"]
    assert lines[1].startswith("j2  succeeded") and "90.00%" in lines[1]
    assert lines[-1] == "more: noisyfit list --cursor abc"
    assert cli.requests[0].url.params["status"] == "succeeded"


def test_watch_prints_each_epoch_and_ends_with_the_result(cli: FakeApi, capsys: pytest.CaptureFixture):
    finished = job(status="succeeded", result={"final_test_accuracy": 0.91, "best_test_accuracy": 0.92})
    states = iter([job(status="running"), finished])
    cli.route("GET", "/v1/jobs/j1", lambda r: httpx.Response(200, json=next(states)))
    figures = {"train_acc": 0.5, "test_acc": 0.9, "memorized": 0.1}
    epochs = [sse({"type": "epoch", "epoch": e, "train_loss": 1.0 / e, **figures}, f"{e}-0") for e in (1, 2, 3)]
    done = sse({"type": "done", "status": "succeeded"}, "4-0")
    cli.route("GET", "/v1/jobs/j1/events", lambda r: event_stream(*epochs, done))
    assert main(["watch", "j1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "epoch 1/3 [########----------------] loss 1.0000  train 50.00%  test 90.00%  memorised 10.00%"
    assert lines[2].startswith("epoch 3/3 [########################] loss 0.3333")
    assert lines[3:5] == ["job j1  succeeded", "  mnist · nce+rce · symmetric 0.4 · 3 epochs · seed 0"]
    assert "final test accuracy 91.00%  best 92.00%" in lines[5]


def test_watch_prints_the_cross_fitting_models_epochs_after_the_jobs(cli: FakeApi, capsys: pytest.CaptureFixture):
    finished = job(status="succeeded", result={"final_test_accuracy": 0.91, "best_test_accuracy": 0.92})
    states = iter([job(status="running"), finished])
    cli.route("GET", "/v1/jobs/j1", lambda r: httpx.Response(200, json=next(states)))
    epoch = sse({"type": "epoch", "epoch": 1, "epochs": 1, "train_loss": 1.0}, "1-0")
    fold = sse({"type": "fold", "fold": 2, "folds": 5, "epoch": 1, "epochs": 1, "train_loss": 0.5}, "2-0")
    done = sse({"type": "done", "status": "succeeded"}, "3-0")
    cli.route("GET", "/v1/jobs/j1/events", lambda r: event_stream(epoch, fold, done))
    assert main(["watch", "j1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("epoch 1/1 ") and lines[1] == "cross-fit model 2/5: epoch 1/1  loss 0.5000"


def test_status_of_a_job_with_a_validation_split_shows_what_it_chooses_by(cli: FakeApi, capsys):
    result = {"final_test_accuracy": 0.8, "best_test_accuracy": 0.85, "final_val_accuracy": 0.6,
              "best_val_epoch": 4, "test_accuracy_at_best_val": 0.84}
    cli.route("GET", "/v1/jobs/j1", job(status="succeeded", result=result))
    assert main(["status", "j1"]) == 0
    assert "  noisy validation 60.00% (last epoch); its best epoch 4 has test accuracy 84.00%" in \
        capsys.readouterr().out.splitlines()


def test_watch_of_a_failed_job_exits_1(cli: FakeApi, capsys: pytest.CaptureFixture):
    cli.route("GET", "/v1/jobs/j1", job(status="failed", error={"code": "oom", "message": "out of memory"}))
    assert main(["watch", "j1"]) == 1
    assert "error: out of memory [oom]" in capsys.readouterr().out


def test_download_saves_every_artifact_without_a_name(cli: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture):
    cli.route("GET", "/v1/jobs/j1/artifacts", {"artifacts": [{"name": "result.json"}, {"name": "metrics.jsonl"}]})
    cli.route("GET", "/v1/jobs/j1/artifacts/result.json", lambda r: httpx.Response(200, content=b"{}"))
    cli.route("GET", "/v1/jobs/j1/artifacts/metrics.jsonl", lambda r: httpx.Response(200, content=b"{}\n"))
    out = tmp_path / "runs" / "j1"
    assert main(["download", "j1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "result.json"]
    assert capsys.readouterr().out.splitlines() == [str(out / "result.json"), str(out / "metrics.jsonl")]


def test_cancel(cli: FakeApi, capsys: pytest.CaptureFixture):
    cli.route("POST", "/v1/jobs/j1/cancel", job(status="cancelled"))
    assert main(["cancel", "j1"]) == 0
    assert capsys.readouterr().out == "job j1: cancelled\n"


def test_sweep_submit_with_a_preset_sends_the_papers_grid(cli: FakeApi, capsys: pytest.CaptureFixture):
    cli.route("POST", "/v1/sweeps", lambda r: httpx.Response(201, json={"id": "s1", "jobs": ["a"] * 120}))
    argv = ["sweep", "submit", "--preset", "table2", "--dataset", "fashion-mnist", "--epochs", "5", "--seeds", "0,1,2"]
    assert main([*argv, "--grid", "loss=ce,nce+rce"]) == 0
    assert capsys.readouterr().out == "submitted sweep s1: 120 jobs\n"
    body = json.loads(cli.requests[0].content)
    assert body["base"] == {"dataset": "fashion-mnist", "epochs": 5}
    assert body["grid"] == {
        "noise.type": ["symmetric"], "noise.rate": [0.0, 0.2, 0.4, 0.6, 0.8],
        "loss": ["ce", "nce+rce"], "seed": [0, 1, 2],
    }
    assert main(argv) == 0
    assert json.loads(cli.requests[1].content)["grid"]["loss"] == PAPER_LOSSES


def test_sweep_submit_with_the_select_preset_sends_linked_candidates_on_a_short_budget(cli: FakeApi):
    cli.route("POST", "/v1/sweeps", lambda r: httpx.Response(201, json={"id": "s1", "jobs": ["a"] * 14}))
    assert main(["sweep", "submit", "--preset", "select", "--dataset", "fashion-mnist", "--seeds", "0"]) == 0
    body = json.loads(cli.requests[0].content)
    assert body["base"] == {"epochs": 10, "dataset": "fashion-mnist"}
    assert body["grid"] == {**PAPER_GRIDS["select"], "seed": [0]}
    assert main(["sweep", "submit", "--preset", "select", "--dataset", "mnist", "--epochs", "3"]) == 0
    assert json.loads(cli.requests[1].content)["base"]["epochs"] == 3


def test_sweep_submit_from_a_file(cli: FakeApi, tmp_path: Path):
    cli.route("POST", "/v1/sweeps", lambda r: httpx.Response(201, json={"id": "s1", "jobs": []}))
    sweep = {"base": {"dataset": "mnist", "loss": "nce+rce"}, "grid": {"alpha": [0.1, 1.0], "seed": [0]}}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep))
    assert main(["sweep", "submit", str(path), "--set", "validation_split=0.2"]) == 0
    assert json.loads(cli.requests[0].content) == {
        "base": {"dataset": "mnist", "loss": "nce+rce", "validation_split": 0.2}, "grid": sweep["grid"]
    }


TABLE = [
    {"cell": {"loss": "ce", "noise.rate": 0.2}, "mean": 0.85, "std": 0.01, "n": 3},
    {"cell": {"loss": "nce+rce", "noise.rate": 0.2}, "mean": 0.9, "std": 0.02, "n": 3},
]


def test_sweep_status_prints_counts_and_the_table(cli: FakeApi, capsys: pytest.CaptureFixture):
    cli.route("GET", "/v1/sweeps/s1", {"id": "s1", "status": "running", "jobs": ["a"] * 6, "table": TABLE})
    assert main(["sweep", "status", "s1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sweep s1  running",
        "  6 jobs",
        "",
        "| loss \\ noise.rate | 0.2 |",
        "| --- | --- |",
        "| ce | 85.00 ± 1.00 |",
        "| nce+rce | **90.00 ± 2.00** |",
    ]


def test_sweep_status_names_the_best_by_noisy_validation_and_the_recommendation(cli: FakeApi, capsys):
    rows = [{"cell": {"alpha": a, "beta": 1.0}, "mean": m, "std": None, "n": 1, "val_mean": v, "val_std": None,
             "resolved": {"loss": "nce+rce", "alpha": a, "beta": 1.0, "loss_params": {"A": -9.21}}}
            for a, m, v in ((0.1, 0.9, 0.6), (1.0, 0.8, 0.7), (10.0, 0.7, 0.65))]
    cli.route("GET", "/v1/sweeps/s1", {"id": "s1", "status": "succeeded", "jobs": ["a"] * 3, "table": rows})
    assert main(["sweep", "status", "s1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "| 1.0 | 1.0 | 80.00 | 1 | 70.00 † |" in out
    assert "recommended: nce+rce, alpha 1, beta 1 (noisy validation 70.00%, test 80.00%)" in out
    assert "Kendall's τ between the validation and the test ranking: -0.33 over 3 cells" in out


def test_sweep_table_asks_the_api_for_the_format(cli: FakeApi, capsys: pytest.CaptureFixture):
    cli.route("GET", "/v1/sweeps/s1/table", lambda r: httpx.Response(200, text="loss,noise.rate,mean\r\n"))
    assert main(["sweep", "table", "s1", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "loss,noise.rate,mean\r\n", "the API's text as it is"
    assert cli.requests[0].url.params["format"] == "csv"


def test_sweep_table_of_an_unknown_sweep_is_the_apis_error(cli: FakeApi, capsys: pytest.CaptureFixture):
    cli.route("GET", "/v1/sweeps/s1/table", lambda r: error(404, "not_found", "no sweep 's1'", "id"))
    assert main(["sweep", "table", "s1"]) == 1
    assert capsys.readouterr().err == "noisyfit: error: no sweep 's1' (field: id) [HTTP 404 not_found]\n"


def test_sweep_cancel_prints_the_sweeps_state_after_it(cli: FakeApi, capsys: pytest.CaptureFixture):
    counts = {"queued": 0, "running": 1, "succeeded": 2, "failed": 0, "cancelled": 3}
    after = {"id": "s1", "status": "running", "jobs": ["a"] * 6, "counts": counts, "table": TABLE}
    cli.route("POST", "/v1/sweeps/s1/cancel", after)
    assert main(["sweep", "cancel", "s1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["sweep s1  running", "  1 running, 2 succeeded, 3 cancelled"]


def test_datasets_upload_and_list(cli: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture):
    cli.route("POST", "/v1/datasets", lambda r: httpx.Response(201, json={"id": "ds1", "name": "mine"}))
    mine = {"id": "ds1", "name": "mine", "num_classes": 5, "train_samples": 900}
    cli.route("GET", "/v1/datasets", {"datasets": [mine]})
    data = tmp_path / "mine.npz"
    data.write_bytes(b"x")
    assert main(["datasets", "upload", str(data), "--name", "mine"]) == 0
    assert main(["datasets", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["uploaded data set ds1 (mine)", "ds1  mine  5 classes  900 samples"]
    assert main(["datasets", "upload", str(tmp_path / "nope.npz"), "--name", "x"]) == 2


def test_catalog_lists_what_can_be_asked_for(cli: FakeApi, capsys: pytest.CaptureFixture):
    from shared.catalog import catalog

    cli.route("GET", "/v1/catalog", catalog())
    assert main(["catalog"]) == 0
    out = capsys.readouterr().out
    assert "data sets: mnist, fashion-mnist, cifar10, cifar100" in out
    assert "  nce    NCE = log p_y / Σ_j log p_j  (Eq. 2)" in out
    assert "loss combinations (written first+second, e.g. nce+rce):" in out
    for name, rule in catalog()["combinations"].items():
        assert f"  {name:6} {rule}" in out
    assert "sweep presets: table2, table3, alpha-beta" in out


# Torch stays out of the client


def test_the_client_does_not_import_torch():
    code = (
        "import sys, client.cli, client.http, client.config, client.spec_flags, shared.sweeps\n"
        "client.cli.main(['submit', '--dataset', 'mnist', '--api-url', 'http://127.0.0.1:9', '--api-key', 'k'])\n"
        "client.cli.main(['train', '--dataset', 'mnist', '--noise', 'symmetric', '--out', 'never'])\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "False\n"
    assert "cannot reach the noisyfit API" in done.stderr and "write TYPE:RATE" in done.stderr, "both ran"

