"""Sweeps: a grid of job specs, and the table of its results (mean ± sample std over seeds).

Pure functions on plain data, no torch: the API expands a posted grid into jobs and
aggregates their results; the CLI formats the table. A grid maps a field of the job spec to
the values it takes; dotted names reach into the spec (`noise.rate`, `loss_params.q`).
"""

import csv
import io
import itertools
import json
import math
import statistics
from collections.abc import Iterable, Iterator
from typing import Any

from shared.catalog import DATASETS, PAPER_GRIDS
from shared.errors import GridError
from shared.models import JobStatus
from shared.spec import JobSpec

MAX_CELLS = 1000
SEED = "seed"
NESTED = {"noise": ("type", "rate", "matrix"), "loss_params": None}  # None: any parameter name

Grid = dict[str, list]
Row = dict[str, Any]



def expand_grid(base: dict, grid: Grid, max_cells: int = MAX_CELLS) -> Iterator[dict]:
    """One spec per cell of the grid, the last grid field varying fastest, each built only when
    it is asked for. A cell shares with the base what the grid does not set (the objects a
    dotted field reaches into are copied), so change no cell in place."""
    check_grid(grid, max_cells)
    return (_with_values(base, dict(zip(grid, values))) for values in itertools.product(*grid.values()))


def spec_bytes(base: dict, grid: Grid) -> int:
    """The JSON size of all the grid's cells together, counted without building one: every cell
    repeats the base, and each value of a field is in cells / len(values) of them."""
    cells = math.prod(len(values) for values in grid.values())
    total = cells * _json_size(base)
    for values in grid.values():
        total += cells // len(values) * sum(_json_size(value) for value in values)
    return total


def _json_size(value: Any) -> int:
    return len(json.dumps(value))


def check_grid(grid: Grid, max_cells: int = MAX_CELLS) -> None:
    if not isinstance(grid, dict):
        raise GridError("the grid must be an object: field name → list of values", "grid")
    for name, values in grid.items():
        _check_name(name, grid)
        if not isinstance(values, (list, tuple)) or not values:
            raise GridError(f"grid field {name!r} needs a non-empty list of values", f"grid.{name}")
        seen = [_canonical(v) for v in values]
        if len(set(seen)) != len(seen):
            raise GridError(f"grid field {name!r} repeats a value; list each value once", f"grid.{name}")
    cells = math.prod(len(values) for values in grid.values())
    if cells > max_cells:
        sizes = " × ".join(f"{len(v)} {k}" for k, v in grid.items())
        raise GridError(f"the grid has {cells} cells ({sizes}); a sweep may have at most {max_cells}", "grid")


def _check_name(name: str, grid: Grid) -> None:
    head, dot, rest = name.partition(".")
    if head not in JobSpec.model_fields or (dot and not rest):
        raise GridError(f"{name!r} is not a field of the job spec; grid fields: {_grid_fields()}", f"grid.{name}")
    if rest:
        if head not in NESTED:
            raise GridError(f"{head!r} has no parts; use {head!r} itself", f"grid.{name}")
        allowed = NESTED[head]
        if allowed is not None and rest not in allowed:
            parts = ", ".join(f"{head}.{p}" for p in allowed)
            raise GridError(f"{name!r} is not a part of {head!r}; use one of: {parts}", f"grid.{name}")
        if head in grid:
            raise GridError(f"the grid sets both {head!r} and {name!r}; keep one", f"grid.{name}")


def _grid_fields() -> str:
    nested = [f"noise.{p}" for p in NESTED["noise"]] + ["loss_params.<name>"]
    return ", ".join(sorted(JobSpec.model_fields) + nested)


def _with_values(base: dict, values: dict[str, Any]) -> dict:
    spec = dict(base)
    for name in values:
        head = name.partition(".")[0]
        if head != name and isinstance(spec.get(head), dict):
            spec[head] = dict(spec[head])
    for name, value in values.items():
        set_path(spec, name, value)
    return spec


def set_path(spec: dict, name: str, value: Any) -> None:
    """spec["noise"]["rate"] = value for name "noise.rate"; a loss parameter name may hold a dot."""
    head, _, rest = name.partition(".")
    if not rest:
        spec[head] = value
        return
    if not isinstance(spec.get(head), dict):
        spec[head] = {}
    spec[head][rest] = value


def get_path(spec: dict, name: str) -> Any:
    head, _, rest = name.partition(".")
    value = spec.get(head)
    if rest:
        return value.get(rest) if isinstance(value, dict) else None
    return value


def paper_grid(name: str, dataset: str, seeds: Iterable[int] = (0, 1, 2)) -> Grid:
    """The grid of the paper's Table 2 or 3, or its α/β search, run over `seeds`."""
    if name not in PAPER_GRIDS:
        raise GridError(f"unknown sweep preset {name!r}; choose one of: {', '.join(PAPER_GRIDS)}", "preset")
    grid = {key: list(values) for key, values in PAPER_GRIDS[name].items()}
    if "asymmetric" in grid.get("noise.type", []) and dataset not in DATASETS:
        raise GridError(f"{name} uses asymmetric noise, whose class maps exist only for the built-in data sets "
            f"({', '.join(DATASETS)}); use table2 for {dataset!r}", "dataset")
    seeds = list(seeds)
    if not seeds:
        raise GridError("a paper grid needs at least one seed", "seeds")
    grid[SEED] = seeds
    return grid


def cell_key(spec: dict, grid: Grid) -> tuple:
    """The values of the grid's fields in `spec`, the seed left out; hashable."""
    return tuple(_canonical(get_path(spec, name)) for name in grid if name != SEED)


def _canonical(value: Any) -> Any:
    """A hashable stand-in that compares like the value (1 == 1.0; lists and dicts by content)."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def aggregate(jobs: list[dict], grid: Grid) -> list[Row]:
    """One row per grid cell without the seed: mean, sample std and count of the final test
    accuracy over the cell's succeeded runs, in the grid's order.

    Each job is a job as the API returns it (`id`, `status`, `spec`, `result`). `runs` lists
    every job of the cell, finished or not.
    """
    fields = {name: values for name, values in grid.items() if name != SEED}
    rows: dict[tuple, Row] = {}
    for values in itertools.product(*fields.values()):
        cell = dict(zip(fields, values))
        rows[cell_key(cell_spec(cell), fields)] = {"cell": cell, "runs": []}
    for job in jobs:
        row = rows.get(cell_key(job.get("spec") or {}, fields))
        if row is not None:
            row["runs"].append(_run(job))
    return [_summarise(row) for row in rows.values()]


def cell_spec(cell: dict[str, Any]) -> dict:
    spec: dict = {}
    for name, value in cell.items():
        set_path(spec, name, value)
    return spec


def _run(job: dict) -> dict:
    result = job.get("result") or {}
    return {
        "id": job.get("id"),
        "seed": (job.get("spec") or {}).get(SEED),
        "status": job.get("status"),
        "final_test_accuracy": result.get("final_test_accuracy"),
    }


def _summarise(row: Row) -> Row:
    accuracies = [
        float(run["final_test_accuracy"])
        for run in row["runs"]
        if run["status"] == JobStatus.succeeded and isinstance(run["final_test_accuracy"], (int, float))
    ]
    n = len(accuracies)
    return {
        "cell": row["cell"],
        "mean": statistics.fmean(accuracies) if n else None,
        "std": statistics.stdev(accuracies) if n >= 2 else None,
        "n": n,
        "runs": row["runs"],
    }


def table_csv(rows: list[Row]) -> str:
    """One line per cell: the grid fields, then the mean and std of the final test accuracy
    as fractions in [0, 1] (the header says so), n and the run count."""
    fields = _fields(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*fields, "mean_accuracy_fraction", "std_accuracy_fraction", "n", "runs"])
    for row in rows:
        cells = [_text(row["cell"].get(name)) for name in fields]
        runs = row.get("runs", [])
        count = len(runs) if isinstance(runs, list) else runs
        writer.writerow([*cells, _number(row["mean"]), _number(row["std"]), row["n"], count])
    return out.getvalue()


def table_markdown(rows: list[Row], pivot: tuple[str, str] | None = ("loss", "noise.rate")) -> str:
    """Tables 2 and 3 of the paper: a row per loss, a column per noise rate, "mean ± std" in %,
    the best of each column in bold. Without both pivot fields in the cells, a flat table.

    Other grid fields that vary join the row label; those with one value head the table.
    """
    fields = _fields(rows)
    if pivot is None or not rows or not all(name in fields for name in pivot):
        return _flat_markdown(rows, fields)
    row_field, column_field = pivot
    others = [name for name in fields if name not in pivot]
    constant = [name for name in others if len(_unique(r["cell"].get(name) for r in rows)) == 1]
    label_fields = [row_field] + [name for name in others if name not in constant]

    columns = _unique(r["cell"].get(column_field) for r in rows)
    grid: dict[tuple, dict] = {}  # row label → column value → row
    best: dict = {}  # column value → highest mean
    for row in rows:
        label = tuple(_text(row["cell"].get(name)) for name in label_fields)
        column = _canonical(row["cell"].get(column_field))
        grid.setdefault(label, {})[column] = row
        if row["mean"] is not None:
            best[column] = max(best.get(column, row["mean"]), row["mean"])

    lines = [f"{name} = {_text(rows[0]['cell'].get(name))}" for name in constant]
    if lines:
        lines.append("")
    corner = f"{' / '.join(label_fields)} \\ {column_field}"
    lines.append(_md_line([corner, *(_text(c) for c in columns)]))
    lines.append(_md_line(["---"] * (len(columns) + 1)))
    for label, by_column in grid.items():
        cells = []
        for column in map(_canonical, columns):
            row = by_column.get(column)
            text = _mean_std(row)
            is_best = row is not None and row["mean"] is not None and row["mean"] == best[column]
            cells.append(f"**{text}**" if is_best and len(grid) > 1 else text)
        lines.append(_md_line([", ".join(label), *cells]))
    return "\n".join(lines) + "\n"


def _flat_markdown(rows: list[Row], fields: list[str]) -> str:
    lines = [_md_line([*fields, "accuracy (%)", "n"]), _md_line(["---"] * (len(fields) + 2))]
    for row in rows:
        lines.append(_md_line([*(_text(row["cell"].get(name)) for name in fields), _mean_std(row), str(row["n"])]))
    return "\n".join(lines) + "\n"


def _mean_std(row: Row | None) -> str:
    if row is None or row["mean"] is None:
        return "–"
    if row["std"] is None:
        return f"{100 * row['mean']:.2f}"
    return f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}"


def _fields(rows: list[Row]) -> list[str]:
    return _unique(name for row in rows for name in row["cell"])


def _unique(values: Iterable) -> list:
    seen: dict = {}
    for value in values:
        seen.setdefault(_canonical(value), value)
    return list(seen.values())


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _md_line(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
