"""The `noisyfit` command: submit, follow and fetch training jobs and sweeps over HTTP, or
train in the foreground with `noisyfit train` (the engine, and torch, are imported only then).

Exit codes: 0 done, 1 the API refused or could not be reached (one line on stderr, or a
watched job that did not succeed), 2 a usage error, 130 interrupted, 141 the reader of the
output went away (as `noisyfit list | head -1` does).
"""

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from client.config import ConfigError, load_config
from client.http import TERMINAL, ClientError, NoisyfitClient
from client.spec_flags import (
    UsageError,
    add_spec_options,
    parse_value,
    read_object,
    spec_from_args,
    split_assignment,
)
from shared.catalog import PAPER_GRID_BASE, PAPER_GRIDS
from shared.errors import SpecError
from shared.sweeps import check_grid, paper_base, paper_grid, table_markdown

Json = dict[str, Any]
Command = Callable[[argparse.Namespace], int]
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
STEP_EVERY = 10  # optimizer steps between two redraws of `noisyfit train`'s line on a terminal


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = run(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()  # here, so that a reader that left is noticed here and not at exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return BROKEN_PIPE


def run(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # argparse has printed the usage and the problem
        return int(exit.code or 0)
    try:
        return args.run(args)
    except (UsageError, ConfigError) as error:
        print(f"noisyfit: {error}", file=sys.stderr)
        return 2
    except SpecError as error:
        print(f"noisyfit: {error.message} (field: {error.field})", file=sys.stderr)
        return 2
    except ClientError as error:
        print(f"noisyfit: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not fail a second time."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (captured, closed)
        pass


# The command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="noisyfit", description="Train deep networks on noisy labels with normalized and Active Passive losses."
    )
    _connection_options(parser, subcommand=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = argparse.ArgumentParser(add_help=False)
    _connection_options(shared, subcommand=True)

    def command(name: str, run: Command, help: str, into: Any = commands) -> argparse.ArgumentParser:
        sub = into.add_parser(name, help=help, description=help, parents=[shared])
        sub.set_defaults(run=run)
        return sub

    sub = command("submit", cmd_submit, "submit a training job")
    sub.add_argument("spec", nargs="?", metavar="SPEC.json", help="job spec file ('-' reads stdin); flags override it")
    add_spec_options(sub)
    sub.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    sub.add_argument("--watch", action="store_true", help="follow the job until it ends")

    sub = command("status", cmd_status, "show a job")
    sub.add_argument("id")
    sub = command("list", cmd_list, "list your jobs, newest first")
    sub.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    sub.add_argument("--cursor", help="the cursor printed at the end of the previous page")
    sub.add_argument("--limit", type=int)
    sub = command("watch", cmd_watch, "follow a job's progress live until it ends")
    sub.add_argument("id")
    sub = command("download", cmd_download, "download a job's artifacts (all of them without NAME)")
    sub.add_argument("id")
    sub.add_argument("name", nargs="?")
    sub.add_argument("--out", default=".", type=Path, help="folder to save into (default: .)")
    sub = command("cancel", cmd_cancel, "cancel a queued or running job")
    sub.add_argument("id")

    sweep = commands.add_parser("sweep", help="grids of jobs and their tables").add_subparsers(
        dest="sweep_command", required=True, metavar="COMMAND"
    )
    sub = command("submit", cmd_sweep_submit, "submit a sweep: a grid of jobs", sweep)
    sub.add_argument("file", nargs="?", metavar="SWEEP.json", help='{"base": SPEC, "grid": {FIELD: [VALUES]}}')
    sub.add_argument("--preset", choices=list(PAPER_GRIDS), help=(
        "the paper's grid (Table 2, Table 3, the α/β search), or select: candidate losses and α/β judged on a "
        f"noisy validation split, {PAPER_GRID_BASE['select']['epochs']} epochs unless --epochs"))
    sub.add_argument("--seeds", default="0,1,2", help="seeds of a preset grid (default: 0,1,2)")
    sub.add_argument(
        "--grid", action="append", default=[], metavar="FIELD=V1,V2", help="a grid field and its values (repeatable)"
    )
    add_spec_options(sub)
    sub = command("status", cmd_sweep_status, "show a sweep and its table", sweep)
    sub.add_argument("id")
    sub = command("table", cmd_sweep_table, "print a sweep's table (mean ± std over seeds)", sweep)
    sub.add_argument("id")
    sub.add_argument("--format", choices=["markdown", "csv", "json"], default="markdown")
    sub = command("cancel", cmd_sweep_cancel, "cancel a sweep's unfinished jobs", sweep)
    sub.add_argument("id")

    datasets = commands.add_parser("datasets", help="your data sets and their versions").add_subparsers(
        dest="datasets_command", required=True, metavar="COMMAND"
    )
    sub = command("upload", cmd_datasets_upload, "upload a data set file", datasets)
    sub.add_argument("file", type=Path)
    sub.add_argument("--name", required=True)
    command("list", cmd_datasets_list, "list your data sets", datasets)
    sub = command("version", cmd_datasets_version, "make a version of a data set with fixed labels: from a job's "
                  "suspects (--from-job) or your decisions (--changes)", datasets)
    sub.add_argument("id", help="the parent: your data set's id, or a built-in data set (fashion-mnist, ...)")
    sub.add_argument("--from-job", metavar="JOB", help="a succeeded job on ID: keep its samples and labels, fix its "
                                                       "suspects (or apply --changes to them)")
    sub.add_argument("--action", choices=["relabel", "drop"], help="relabel the suspects to the predicted class "
                                                                   "(default) or drop them")
    sub.add_argument("--threshold", type=float, metavar="P",
                     help="suspects: predicted as another class with at least this confidence (default: the job's "
                          "flagged ones, or 0.5)")
    sub.add_argument("--changes", type=Path, metavar="CSV", help="your decisions: a CSV with the header index,label "
                                                                 "(an empty label or -1 drops the sample)")
    sub.add_argument("--name", help="the version's name")
    sub.add_argument("--retrain", action="store_true", help="also submit a job on the version (the source job's spec)")
    sub.add_argument("--watch", action="store_true", help="with --retrain, follow that job until it ends")
    sub = command("lineage", cmd_datasets_lineage, "show a data set's chain of versions and the jobs on each", datasets)
    sub.add_argument("id")

    command("catalog", cmd_catalog, "what can be asked for: data sets, losses, models, noise, presets")

    help = "train one job in the foreground, without a server; the artifacts land in --out"
    sub = commands.add_parser("train", help=help, description=help)
    sub.set_defaults(run=cmd_train)
    sub.add_argument("spec", nargs="?", metavar="SPEC.json", help="job spec file ('-' reads stdin); flags override it")
    add_spec_options(sub)
    sub.add_argument("--out", required=True, type=Path, help="folder for the artifacts (resumes the run it holds)")
    sub.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    sub.add_argument("--data-dir", type=Path, help="data set cache (default: NOISYFIT_DATA_DIR)")
    sub.add_argument("--download", action="store_true", help="download a missing data set (MNIST, CIFAR)")
    sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print result.json's content")
    return parser


def _connection_options(parser: argparse.ArgumentParser, subcommand: bool) -> None:
    """On the main parser and on every command, so that they may come before or after it."""
    default = (lambda value: argparse.SUPPRESS) if subcommand else (lambda value: value)
    parser.add_argument(
        "--api-url", default=default(None), help="API address (else NOISYFIT_API_URL or the config file)"
    )
    parser.add_argument("--api-key", default=default(None), help="API key (else NOISYFIT_API_KEY or the config file)")
    parser.add_argument("--timeout", type=float, default=default(30.0), help="seconds per request (default: 30)")
    parser.add_argument("--json", action="store_true", default=default(False), help="print the API's JSON")


def make_client(args: argparse.Namespace) -> NoisyfitClient:
    config = load_config(args.api_url, args.api_key)
    if not config.api_key:
        raise ConfigError(
            "no API key: pass --api-key, set NOISYFIT_API_KEY, or write api_key in ~/.config/noisyfit/config.toml"
        )
    return NoisyfitClient(config.api_url, config.api_key, args.timeout)


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2) if args.json else human(data))


# Jobs


def read_spec(args: argparse.Namespace, command: str) -> Json:
    spec = spec_from_args(args, read_object(args.spec, "a job spec") if args.spec else None)
    if "dataset" not in spec:
        raise UsageError(f"{command} needs a SPEC.json file or --dataset")
    return spec


def cmd_submit(args: argparse.Namespace) -> int:
    spec = read_spec(args, "submit")
    with make_client(args) as client:
        job = client.submit_job(spec, args.idempotency_key)
        emit(args, job, lambda j: f"submitted job {j['id']} ({j['status']}): {spec_summary(j.get('spec') or spec)}")
        if args.watch:
            return watch(client, job["id"], sys.stdout)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        emit(args, client.get_job(args.id), format_job)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        page = client.list_jobs(args.status, args.cursor, args.limit)
    emit(args, page, format_job_list)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        return watch(client, args.id, sys.stdout)


def cmd_download(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    with make_client(args) as client:
        names = [args.name] if args.name else [a["name"] for a in client.artifacts(args.id)]
        for name in names:
            print(client.download(args.id, name, args.out))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        job = client.cancel(args.id)
    emit(args, job, lambda j: f"job {j.get('id', args.id)}: {j.get('status', 'cancel requested')}")
    return 0


def spec_summary(spec: Json) -> str:
    """mnist · nce+rce · symmetric 0.4 · 50 epochs · seed 0"""
    noise = spec.get("noise") or {}
    parts = [spec.get("dataset"), spec.get("loss")]
    if noise.get("type") not in (None, "none"):
        parts.append(f"{noise['type']} {noise.get('rate', '')}".strip())
    if spec.get("epochs"):
        parts.append(f"{spec['epochs']} epochs")
    if spec.get("seed") is not None:
        parts.append(f"seed {spec['seed']}")
    return " · ".join(str(p) for p in parts if p is not None)


def percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "–"


def format_job(job: Json) -> str:
    lines = [f"job {job['id']}  {job['status']}" + (f"  (attempt {job['attempts']})" if job.get("attempts") else "")]
    lines.append("  " + spec_summary(job.get("spec") or {}))
    progress = job.get("progress") or {}
    if progress.get("epoch"):
        metrics = progress.get("metrics") or {}
        lines.append(
            f"  epoch {progress['epoch']}/{progress.get('epochs', '?')}  test {percent(metrics.get('test_acc'))}"
            f"  train {percent(metrics.get('train_acc'))}"
        )
    result = job.get("result") or {}
    if result:
        lines.append(
            f"  final test accuracy {percent(result.get('final_test_accuracy'))}"
            f"  best {percent(result.get('best_test_accuracy'))}"
        )
        if result.get("final_val_accuracy") is not None:
            lines.append("  " + validation_summary(result))
    error = job.get("error") or {}
    if error:
        lines.append(f"  error: {error.get('message', error)}" + (f" [{error['code']}]" if error.get("code") else ""))
    times = [f"{name} {job[f'{name}_at']}" for name in ("created", "started", "finished") if job.get(f"{name}_at")]
    if times:
        lines.append("  " + "  ".join(times))
    return "\n".join(lines)


def validation_summary(result: Json) -> str:
    """The noisy-validation figures of a result: what a user without clean labels chooses by."""
    return (f"noisy validation {percent(result.get('final_val_accuracy'))} (last epoch); its best epoch "
            f"{result.get('best_val_epoch')} has test accuracy {percent(result.get('test_accuracy_at_best_val'))}")


def format_job_list(page: Json) -> str:
    jobs = page.get("jobs", page.get("items", [])) if isinstance(page, dict) else page
    header = ("ID", "STATUS", "JOB", "EPOCH", "TEST ACC", "CREATED")
    rows = [header]
    for job in jobs:
        progress = job.get("progress") or {}
        accuracy = (job.get("result") or {}).get("final_test_accuracy", (progress.get("metrics") or {}).get("test_acc"))
        epoch = f"{progress.get('epoch', 0)}/{progress.get('epochs', '?')}" if progress else ""
        spec = spec_summary(job.get("spec") or {})
        rows.append((job["id"], job["status"], spec, epoch, percent(accuracy), job.get("created_at", "")))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    if not jobs:
        lines = ["no jobs"]
    if isinstance(page, dict) and page.get("next"):
        lines.append(f"more: noisyfit list --cursor {page['next']}")
    return "\n".join(lines)


# Watching a job


class Progress:
    """A job's events as one line per epoch, or, on a terminal, with a line redrawn in place
    for the steps in between. `noisyfit watch` and `noisyfit train` print the same lines."""

    WIDTH = 24

    def __init__(self, out: TextIO, epochs: int | None):
        self.out = out
        self.epochs = epochs
        self.live = out.isatty()

    def event(self, event: Json) -> None:
        kind = event.get("type")
        if kind == "epoch":
            self.epoch(event)
        elif kind == "step":
            self.step(event)
        elif kind == "fold":
            self.fold(event)
        elif kind == "status":
            self._show(f"status: {event.get('status')}")

    def epoch(self, event: Json) -> None:
        epoch, epochs = event.get("epoch", 0), event.get("epochs") or self.epochs
        self.epochs = epochs
        figures = [f"loss {event['train_loss']:.4f}" if _number(event.get("train_loss")) else ""]
        for name, key in (("train", "train_acc"), ("test", "test_acc"), ("memorised", "memorized")):
            figures.append(f"{name} {percent(event[key])}" if _number(event.get(key)) else "")
        text = "  ".join(f for f in figures if f)
        self._show(f"epoch {epoch}/{epochs or '?'} {bar(epoch, epochs, self.WIDTH)} {text}")

    def fold(self, event: Json) -> None:
        """An epoch of a cross-fitting model, after the job's own epochs."""
        loss = f"  loss {event['train_loss']:.4f}" if _number(event.get("train_loss")) else ""
        self._show(f"cross-fit model {event.get('fold', '?')}/{event.get('folds', '?')}: "
                   f"epoch {event.get('epoch', '?')}/{event.get('epochs') or self.epochs or '?'}{loss}")

    def step(self, event: Json) -> None:
        if self.live and event.get("batch") is not None:
            self._show(
                f"epoch {event.get('epoch', '?')}/{event.get('epochs') or self.epochs or '?'}:"
                f" batch {event['batch']}/{event.get('batches', '?')}", final=False,
            )  # fmt: skip

    def _show(self, text: str, final: bool = True) -> None:
        if self.live:
            self.out.write("\r\033[K" + text + ("\n" if final else ""))
        elif final:
            self.out.write(text + "\n")
        self.out.flush()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bar(done: int, total: int | None, width: int) -> str:
    if not total:
        return ""
    filled = min(width, round(width * done / total))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def watch(client: NoisyfitClient, job_id: str, out: TextIO) -> int:
    """Follow a job's events until it ends; 0 when it succeeded, 1 otherwise."""
    job = client.get_job(job_id)
    if job["status"] not in TERMINAL:
        progress = Progress(out, (job.get("spec") or {}).get("epochs"))
        for event in client.events(job_id):
            progress.event(event)
        job = client.get_job(job_id)
    print(format_job(job), file=out)
    return 0 if job["status"] == "succeeded" else 1


# Sweeps


def cmd_sweep_submit(args: argparse.Namespace) -> int:
    sweep = read_object(args.file, '{"base": SPEC, "grid": {FIELD: [VALUES]}}') if args.file else {}
    base = spec_from_args(args, sweep.get("base"))
    grid = dict(sweep.get("grid") or {})
    if args.preset:
        if "dataset" not in base:
            raise UsageError("--preset needs --dataset (the paper's grids are per data set)")
        grid = {**paper_grid(args.preset, base["dataset"], _seeds(args.seeds)), **grid}
        base = paper_base(args.preset, base)
    for entry in args.grid:
        key, values = split_assignment(entry, "--grid")
        grid[key] = [parse_value(v) for v in values.split(",")]
    if "dataset" not in base:
        raise UsageError("sweep submit needs a base spec with a dataset (SWEEP.json or --dataset)")
    if not grid:
        raise UsageError("sweep submit needs a grid: SWEEP.json, --preset or --grid FIELD=V1,V2")
    check_grid(grid)
    with make_client(args) as client:
        created = client.submit_sweep(base, grid)
    emit(args, created, lambda s: f"submitted sweep {s['id']}: {len(s.get('jobs', []))} jobs")
    return 0


def _seeds(text: str) -> list[int]:
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: write integers separated by commas, e.g. 0,1,2") from None


def cmd_sweep_status(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        sweep = client.get_sweep(args.id)
    emit(args, sweep, format_sweep)
    return 0


def format_sweep(sweep: Json, table: bool = True) -> str:
    lines = [f"sweep {sweep['id']}  {sweep.get('status', '')}".rstrip()]
    counts = sweep.get("counts")
    if counts:
        lines.append("  " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
    else:
        lines.append(f"  {len(sweep.get('jobs', []))} jobs")
    if table and sweep.get("table"):
        lines += ["", table_markdown(sweep["table"]).rstrip()]
    return "\n".join(lines)


def cmd_sweep_table(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        table = client.sweep_table(args.id, args.format)
    text = json.dumps(table, indent=2) if args.format == "json" else table
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_sweep_cancel(args: argparse.Namespace) -> int:
    """Queued jobs are cancelled at once; running ones stop at their next step."""
    with make_client(args) as client:
        sweep = client.cancel_sweep(args.id)
    emit(args, sweep, lambda s: format_sweep(s, table=False))
    return 0


# Data sets and catalog


def cmd_datasets_upload(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"cannot read {args.file}: no such file")
    with make_client(args) as client:
        dataset = client.upload_dataset(args.file, args.name)
    emit(args, dataset, lambda d: f"uploaded data set {d.get('id')} ({args.name})")
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        emit(args, client.list_datasets(), format_datasets)
    return 0


def format_datasets(listing: Any) -> str:
    items = listing.get("datasets", listing.get("items", [])) if isinstance(listing, dict) else listing
    if not items:
        return "no data sets"
    return "\n".join(
        f"{d.get('id')}  {d.get('name', '')}  {d.get('num_classes', '?')} classes"
        f"  {d.get('train_samples', '?')} samples" + (f"  version of {d['parent_id']}" if d.get("parent_id") else "")
        for d in items
    )


def cmd_datasets_version(args: argparse.Namespace) -> int:
    if args.from_job is None and args.changes is None:
        raise UsageError("datasets version needs --from-job JOB (fix its suspects) or --changes CSV (your decisions)")
    if args.changes is not None and (args.action or args.threshold is not None):
        raise UsageError("--action and --threshold pick a job's suspects; with --changes you decide: leave them out")
    if args.watch and not args.retrain:
        raise UsageError("--watch follows the job that --retrain submits; add --retrain")
    changes, drop = read_decisions(args.changes) if args.changes is not None else (None, None)
    with make_client(args) as client:
        made = client.create_version(args.id, from_job=args.from_job, action=args.action, min_score=args.threshold,
                                     changes=changes, drop=drop, name=args.name, retrain=args.retrain)
        emit(args, made, format_version)
        if args.watch and made.get("job"):
            return watch(client, made["job"]["id"], sys.stdout)
    return 0


def read_decisions(path: Path) -> tuple[list[list[int]], list[int]]:
    """A reviewer's CSV (header index,label; other columns ignored): relabel pairs and indices to
    drop (an empty label, or -1)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    reader = csv.DictReader(io.StringIO(text))
    if not {"index", "label"} <= set(reader.fieldnames or []):
        raise UsageError(f"{path}: the first line must be a header with the columns index,label")
    changes: list[list[int]] = []
    drop: list[int] = []
    for row in reader:
        line = reader.line_num
        try:
            index = int(row["index"])
            label = int(row["label"]) if (row["label"] or "").strip() else -1
        except (TypeError, ValueError):
            raise UsageError(f"{path} line {line}: index and label must be integers (an empty label or -1 drops the "
                             f"sample), got {row['index']!r}, {row['label']!r}") from None
        if label == -1:
            drop.append(index)
        else:
            changes.append([index, label])
    if not changes and not drop:
        raise UsageError(f"{path} holds no decisions: one line per sample, index,label")
    return changes, drop


def format_version(made: Json) -> str:
    lines = [f"made version {made['id']} of {made.get('parent_id')}: {made.get('train_samples')} samples, "
             f"{made.get('relabelled')} relabelled, {made.get('dropped')} dropped"]
    job = made.get("job")
    if job:
        lines.append(f"submitted job {job['id']} ({job['status']}): {spec_summary(job.get('spec') or {})}")
    return "\n".join(lines)


def cmd_datasets_lineage(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        emit(args, client.lineage(args.id), format_lineage)
    return 0


def format_lineage(lineage: Json) -> str:
    """Each data set from the root down, and under it the jobs trained on it."""
    lines = []
    for depth, node in enumerate(lineage.get("chain", [])):
        head = f"{node['id']}  ({node['kind']})" if node["kind"] != "version" else (
            f"{node['id']}  {node['name']!r}  {node.get('train_samples')} samples, "
            f"{node.get('relabelled')} relabelled, {node.get('dropped')} dropped" + (f", from job {node['source_job']}" if node.get("source_job") else ""))
        lines.append(("  " * depth) + ("└ " if depth else "") + head)
        for job in node.get("jobs", []):
            lines.append("  " * depth + f"    job {job['id']}  {job['status']}  test "
                         f"{percent(job.get('final_test_accuracy'))}  noise {percent(job.get('noise_rate_realised'))}")
        if node.get("jobs_total", 0) > len(node.get("jobs", [])):
            lines.append("  " * depth + f"    … {node['jobs_total'] - len(node['jobs'])} older jobs")
    return "\n".join(lines)


def cmd_catalog(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        emit(args, client.catalog(), format_catalog)
    return 0


def format_catalog(catalog: Json) -> str:
    lines = ["data sets: " + ", ".join(catalog.get("datasets", {}))]
    lines.append("losses:")
    for name, info in (catalog.get("losses") or {}).items():
        lines.append(f"  {name:6} {info.get('formula', '') if isinstance(info, dict) else info}")
    lines.append("loss combinations (written first+second, e.g. nce+rce):")
    for name, rule in (catalog.get("combinations") or {}).items():
        lines.append(f"  {name:6} {rule}")
    for title, key in (("models", "models"), ("noise", "noise"), ("sweep presets", "sweep_presets")):
        lines.append(f"{title}: " + ", ".join(catalog.get(key) or {}))
    return "\n".join(lines)


# Training without a server


def cmd_train(args: argparse.Namespace) -> int:
    spec = read_spec(args, "train")
    try:
        from worker import local  # torch: only for this command
    except ImportError as error:
        print(f"noisyfit: train needs the training engine ({error}); pip install 'noisyfit[worker]'", file=sys.stderr)
        return 1
    progress = Progress(sys.stderr if args.json else sys.stdout, spec.get("epochs"))  # --json: stdout is the result
    step_every = STEP_EVERY if progress.live else 0
    try:
        result = local.train(
            spec, args.out, device=args.device, data_dir=args.data_dir, download=args.download,
            on_event=progress.event, step_every=step_every,
        )  # fmt: skip
    except local.LocalRunError as error:
        raise UsageError(str(error)) from None
    if result["status"] == "stopped":
        print(f"stopped after {result['epochs_completed']} epochs; run the same command again to resume")
        return 130
    emit(args, result, lambda r: (
        f"final test accuracy {percent(r['final_test_accuracy'])}, best {percent(r['best_test_accuracy'])};"
        f" artifacts in {args.out}" + (f"\n{validation_summary(r)}" if r.get("final_val_accuracy") is not None else "")
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
