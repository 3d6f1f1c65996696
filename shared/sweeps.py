"""Sweeps: a grid of job specs, and the table of its results (mean ± sample std over seeds).

Pure functions on plain data, no torch: the API expands a posted grid into jobs and
aggregates their results; the CLI formats the table. A grid maps a field of the job spec to
the values it takes; dotted names reach into the spec (`noise.rate`, `loss_params.q`). Fields
joined by commas vary together (`"loss,alpha,beta": [["ce", null, null], ["nce+rce", 1, 10]]`):
one list of values per cell, null leaving that field to the base and the presets.

Choosing without clean labels: a row's `val_mean`/`val_std` are over its runs' accuracy on
their noisy validation split (`final_val_accuracy`); `best` picks the row of the highest
`val_mean` (of `mean` when no run held a split out), `recommendation` the loss and α/β of the
row of the highest `val_mean` and never looks at test figures, and Kendall's τ tells how far
the validation ranking of the rows agrees with their test ranking.
"""

import csv
import io
import itertools
import json
import math
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.catalog import DATASETS, PAPER_GRID_BASE, PAPER_GRIDS
from shared.errors import GridError
from shared.models import JobStatus
from shared.spec import JobSpec

MAX_CELLS = 1000
SEED = "seed"
LINK = ","  # "loss,alpha,beta": fields that vary together
LOSS_SETTING = ("loss", "alpha", "beta")  # with loss_params.*: what a recommendation may vary
NESTED = {"noise": ("type", "rate", "matrix"), "loss_params": None}  # None: any parameter name

Grid = dict[str, list]
Row = dict[str, Any]



def expand_grid(base: dict, grid: Grid, max_cells: int = MAX_CELLS) -> Iterator[dict]:
    """One spec per cell of the grid, the last grid field varying fastest, each built only when
    it is asked for. A cell shares with the base what the grid does not set (the objects a
    dotted field reaches into are copied), so change no cell in place."""
    check_grid(grid, max_cells)
    names = list(grid)
    return (_with_values(base, cell_values(names, values)) for values in itertools.product(*grid.values()))


def fields_of(name: str) -> list[str]:
    """The spec fields a grid entry sets: one, or several linked by commas."""
    return [part.strip() for part in name.split(LINK)] if LINK in name else [name]


def grid_fields(grid: Grid) -> list[str]:
    """Every spec field the grid sets, linked ones each on its own, in the grid's order."""
    return [field for name in grid for field in fields_of(name)]


def cell_values(names: Iterable[str], values: Iterable[Any]) -> dict[str, Any]:
    """{field: value} of one cell, from the grid's entries and one value of each (a linked
    entry's value is a list holding one value per field)."""
    cell: dict[str, Any] = {}
    for name, value in zip(names, values):
        fields = fields_of(name)
        cell.update(zip(fields, value) if len(fields) > 1 else [(name, value)])
    return cell


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
    fields = grid_fields(grid)
    for name, values in grid.items():
        for field in fields_of(name):
            _check_name(field, fields, f"grid.{name}")
        if not isinstance(values, (list, tuple)) or not values:
            raise GridError(f"grid field {name!r} needs a non-empty list of values", f"grid.{name}")
        if LINK in name:
            _check_linked(name, values)
        seen = [_canonical(v) for v in values]
        if len(set(seen)) != len(seen):
            raise GridError(f"grid field {name!r} repeats a value; list each value once", f"grid.{name}")
    cells = math.prod(len(values) for values in grid.values())
    if cells > max_cells:
        sizes = " × ".join(f"{len(v)} {k}" for k, v in grid.items())
        raise GridError(f"the grid has {cells} cells ({sizes}); a sweep may have at most {max_cells}", "grid")


def _check_name(name: str, fields: list[str], where: str) -> None:
    """`name` is a field of the spec (or a part of one) that the grid sets once; `fields`: all it sets."""
    head, dot, rest = name.partition(".")
    if head not in JobSpec.model_fields or (dot and not rest):
        raise GridError(f"{name!r} is not a field of the job spec; grid fields: {_grid_fields()}", where)
    if fields.count(name) > 1:
        raise GridError(f"the grid sets {name!r} twice; keep one entry for it", where)
    if rest:
        if head not in NESTED:
            raise GridError(f"{head!r} has no parts; use {head!r} itself", where)
        allowed = NESTED[head]
        if allowed is not None and rest not in allowed:
            parts = ", ".join(f"{head}.{p}" for p in allowed)
            raise GridError(f"{name!r} is not a part of {head!r}; use one of: {parts}", where)
        if head in fields:
            raise GridError(f"the grid sets both {head!r} and {name!r}; keep one", where)


def _check_linked(name: str, values: list) -> None:
    """Each value of a linked entry is a list of one value per field; the seed varies on its own."""
    fields = fields_of(name)
    if SEED in fields:
        raise GridError(f"{name!r} links the seed; give it its own entry: \"seed\": [0, 1, 2]", f"grid.{name}")
    for value in values:
        if not isinstance(value, (list, tuple)) or len(value) != len(fields):
            raise GridError(f"each value of {name!r} is a list of {len(fields)} values, one per field "
                            f"({', '.join(fields)}); got {value!r}", f"grid.{name}")


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
    """The grid of the paper's Table 2 or 3, its α/β search, or the `select` preset (candidate
    losses and α/β on a noisy validation split), run over `seeds`."""
    if name not in PAPER_GRIDS:
        raise GridError(f"unknown sweep preset {name!r}; choose one of: {', '.join(PAPER_GRIDS)}", "preset")
    grid = {key: [list(v) if isinstance(v, list) else v for v in values] for key, values in PAPER_GRIDS[name].items()}
    if "asymmetric" in grid.get("noise.type", []) and dataset not in DATASETS:
        raise GridError(f"{name} uses asymmetric noise, whose class maps exist only for the built-in data sets "
            f"({', '.join(DATASETS)}); use table2 for {dataset!r}", "dataset")
    seeds = list(seeds)
    if not seeds:
        raise GridError("a paper grid needs at least one seed", "seeds")
    grid[SEED] = seeds
    return grid


def paper_base(name: str, base: dict) -> dict:
    """The base spec with what the preset fills in where the base is silent (PAPER_GRID_BASE)."""
    return {**PAPER_GRID_BASE.get(name, {}), **base}


def cell_key(spec: dict, grid: Grid) -> tuple:
    """The values of the grid's fields in `spec`, the seed left out; hashable."""
    return _key(spec, [name for name in grid_fields(grid) if name != SEED])


def _key(spec: dict, fields: Iterable[str]) -> tuple:
    return tuple(_canonical(get_path(spec, name)) for name in fields)


def _canonical(value: Any) -> Any:
    """A hashable stand-in that compares like the value (1 == 1.0; lists and dicts by content)."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def aggregate(jobs: list[dict], grid: Grid) -> list[Row]:
    """One row per grid cell without the seed, in the grid's order: mean, sample std and count
    of the final test accuracy over the cell's succeeded runs, and the mean and sample std of
    their final accuracy on the noisy validation split (None without one).

    Each job is a job as the API returns it (`id`, `status`, `spec`, `result`). `runs` lists
    every job of the cell, finished or not; `resolved`, the loss, alpha, beta and loss_params
    its runs resolved to (None before any run is known). A job belongs to the cell whose
    values its spec has; a null in a cell matches any value (the most specific cell wins).
    """
    names = [name for name in grid if name != SEED]
    rows: list[Row] = []
    index: dict[tuple[str, ...], dict[tuple, Row]] = {}  # the fields a cell sets → their values → its row
    for values in itertools.product(*(grid[name] for name in names)):
        cell = cell_values(names, values)
        row = {"cell": cell, "runs": [], "resolved": None}
        rows.append(row)
        fixed = tuple(field for field, value in cell.items() if value is not None)
        index.setdefault(fixed, {}).setdefault(_key(cell_spec(cell), fixed), row)
    patterns = sorted(index, key=len, reverse=True)
    for job in jobs:
        spec = job.get("spec") or {}
        row = next((index[f][k] for f in patterns if (k := _key(spec, f)) in index[f]), None)
        if row is not None:
            row["runs"].append(_run(job))
            if row["resolved"] is None and "loss" in spec:
                row["resolved"] = {name: spec.get(name) for name in (*LOSS_SETTING, "loss_params")}
    return [_summarise(row) for row in rows]


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
        "final_val_accuracy": result.get("final_val_accuracy"),
    }


def _summarise(row: Row) -> Row:
    accuracies = _finished(row["runs"], "final_test_accuracy")
    validation = _finished(row["runs"], "final_val_accuracy")
    n = len(accuracies)
    return {
        "cell": row["cell"],
        "mean": statistics.fmean(accuracies) if n else None,
        "std": statistics.stdev(accuracies) if n >= 2 else None,
        "n": n,
        "val_mean": statistics.fmean(validation) if validation else None,
        "val_std": statistics.stdev(validation) if len(validation) >= 2 else None,
        "resolved": row["resolved"],
        "runs": row["runs"],
    }


def _finished(runs: list[dict], key: str) -> list[float]:
    """The figure `key` of the succeeded runs that have it."""
    return [float(run[key]) for run in runs if run["status"] == JobStatus.succeeded and _is_number(run.get(key))]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Choosing by the noisy validation split


def best(rows: list[Row]) -> dict | None:
    """The row of the highest `val_mean`, or of the highest `mean` when no row has a
    validation figure (`by` says which); the first of equals in the table's order."""
    chosen = _best_row(rows)
    if chosen is None:
        return None
    by, row = chosen
    return {"by": by, "cell": row["cell"], **_figures(row)}


def _best_row(rows: list[Row]) -> tuple[str, Row] | None:
    by, key = ("validation", "val_mean") if any(_is_number(r.get("val_mean")) for r in rows) else ("test", "mean")
    scored = [row for row in rows if _is_number(row.get(key))]
    return (by, max(scored, key=lambda r: r[key])) if scored else None  # max keeps the first of equals


def recommendation(rows: list[Row]) -> dict | None:
    """The loss, alpha and beta of the row of the highest `val_mean`, with its figures; None
    when no row has a validation figure, or when the rows differ in more than the loss setting
    (loss, alpha, beta, loss_params), e.g. in noise rate. It never looks at a test figure."""
    chosen = _best_row(rows)
    if chosen is None or chosen[0] != "validation":
        return None
    varying = [f for f in _fields(rows) if len(_unique(r["cell"].get(f) for r in rows)) > 1]
    if any(f not in LOSS_SETTING and f.partition(".")[0] != "loss_params" for f in varying):
        return None
    row = chosen[1]
    setting = {**{k: v for k, v in (row.get("resolved") or {}).items() if v is not None},
               **{k: v for k, v in row["cell"].items() if k in LOSS_SETTING and v is not None}}
    beta = setting.get("beta")
    return {
        "cell": row["cell"],
        "loss": setting.get("loss"),
        "alpha": setting.get("alpha"),
        "beta": beta or None,  # a resolved single term has beta 0: it takes none
        "loss_params": setting.get("loss_params"),
        **_figures(row),
    }


def _figures(row: Row) -> dict:
    return {"val_mean": row.get("val_mean"), "val_std": row.get("val_std"), "mean": row.get("mean"),
            "std": row.get("std"), "n": row.get("n")}


def kendall_tau_b(xs: list[float], ys: list[float]) -> float | None:
    """Kendall's rank correlation τ-b of paired values, ties counted as in Kendall (1945):

        τ_b = (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)),  n0 = n(n-1)/2

    where ties_x counts the pairs tied in x (ties_y in y; a pair tied in both is in both
    counts); a pair tied in x or in y is neither concordant nor discordant. 1: the same order,
    -1: the reverse. None for fewer than two pairs, or when every x or every y is equal."""
    if len(xs) != len(ys):
        raise ValueError(f"kendall_tau_b needs as many xs as ys; got {len(xs)} and {len(ys)}")
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    i, j = np.triu_indices(len(x), k=1)  # every pair once: at most MAX_CELLS² / 2 of them
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    score = (dx * dy).sum()  # concordant - discordant: a pair tied in x or y adds 0
    pairs = len(i)
    denominator = math.sqrt((pairs - (dx == 0).sum()) * (pairs - (dy == 0).sum()))
    return float(score / denominator) if denominator else None


MIN_TAU_ROWS = 3


def validation_test_kendall_tau(rows: list[Row]) -> float | None:
    """Kendall's τ-b between the rows' order by `val_mean` and by `mean` (the clean test
    accuracy), over the rows that have both, when there are at least MIN_TAU_ROWS of them."""
    pairs = [(r["val_mean"], r["mean"]) for r in rows if _is_number(r.get("val_mean")) and _is_number(r.get("mean"))]
    if len(pairs) < MIN_TAU_ROWS:
        return None
    return kendall_tau_b([v for v, _ in pairs], [t for _, t in pairs])


def summary(rows: list[Row]) -> dict:
    """What a sweep's table says beyond its rows (the JSON of GET /v1/sweeps/{id})."""
    return {"best": best(rows), "recommendation": recommendation(rows),
            "validation_test_kendall_tau": validation_test_kendall_tau(rows)}


def table_csv(rows: list[Row]) -> str:
    """One line per cell: the grid fields, then the mean and std of the final test accuracy
    as fractions in [0, 1] (the header says so), n and the run count, then the mean and std
    of the noisy-validation accuracy and best_by_validation (1 on the row of the highest
    val_mean, else 0)."""
    fields = _fields(rows)
    marked = _marked(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*fields, "mean_accuracy_fraction", "std_accuracy_fraction", "n", "runs",
                     "val_mean_accuracy_fraction", "val_std_accuracy_fraction", "best_by_validation"])
    for row in rows:
        cells = [_text(row["cell"].get(name)) for name in fields]
        runs = row.get("runs", [])
        count = len(runs) if isinstance(runs, list) else runs
        writer.writerow([*cells, _number(row["mean"]), _number(row["std"]), row["n"], count,
                         _number(row.get("val_mean")), _number(row.get("val_std")), int(row is marked)])
    return out.getvalue()


@dataclass(frozen=True)
class Layout:
    """A table's rows as a grid, the paper's way: a line per value of `label_fields` (the row
    field and the other fields that vary), a column per value of `column`; the fields with one
    value in every row are `constant`."""

    constant: list[str]
    label_fields: list[str]
    column: str | None  # None: one column
    columns: list[Any]  # the column field's values in the table's order ([None] without one)
    lines: list[tuple[tuple[Any, ...], list[Row | None]]]  # a line's label values and its row in each column
    best: list[float | None]  # the highest mean of each column


def layout(rows: list[Row], column: str | None, row_field: str | None = "loss") -> Layout:
    """Lay the rows out with the values of `column` as columns and `row_field` first in each
    line's label (either may be None, or a field the cells lack)."""
    fields = _fields(rows)
    column = column if column in fields else None
    others = [name for name in fields if name != column and name != row_field]
    constant = [name for name in others if len(_unique(r["cell"].get(name) for r in rows)) == 1]
    label_fields = ([row_field] if row_field in fields else []) + [name for name in others if name not in constant]
    columns = _unique(r["cell"].get(column) for r in rows) if column else [None]
    keys = [_canonical(c) for c in columns]
    lines: dict[tuple, list[Row | None]] = {}
    for row in rows:
        label = tuple(_canonical(row["cell"].get(name)) for name in label_fields)
        line = lines.setdefault(label, [None] * len(columns))
        line[keys.index(_canonical(row["cell"].get(column))) if column else 0] = row
    best = [max((r["mean"] for r in rows_of if r is not None and r["mean"] is not None), default=None)
            for rows_of in zip(*lines.values())] if lines else [None] * len(columns)
    labelled = [(tuple(next(r for r in line if r is not None)["cell"].get(name) for name in label_fields), line)
                for line in lines.values()]
    return Layout(constant, label_fields, column, columns, labelled, best)


def table_markdown(rows: list[Row], pivot: tuple[str, str] | None = ("loss", "noise.rate")) -> str:
    """Tables 2 and 3 of the paper: a row per loss, a column per noise rate, "mean ± std" in %,
    the best of each column in bold. Without both pivot fields in the cells, a flat table.

    Other grid fields that vary join the row label; those with one value head the table.
    Where runs held out a noisy validation split, each figure is followed by the validation
    accuracy, the row of the highest val_mean is marked †, and notes under the table name it,
    the recommended loss and α/β, and Kendall's τ between the validation and test rankings.
    """
    fields = _fields(rows)
    if pivot is None or not rows or not all(name in fields for name in pivot):
        return _flat_markdown(rows, fields) + _notes(rows)
    row_field, column_field = pivot
    grid = layout(rows, column_field, row_field)
    marked = _marked(rows)
    lines = [f"{name} = {_text(rows[0]['cell'].get(name))}" for name in grid.constant]
    if lines:
        lines.append("")
    corner = f"{' / '.join(grid.label_fields)} \\ {column_field}"
    lines.append(_md_line([corner, *(_text(c) for c in grid.columns)]))
    lines.append(_md_line(["---"] * (len(grid.columns) + 1)))
    for label, line in grid.lines:
        cells = []
        for row, best in zip(line, grid.best):
            text = mean_std(row)
            is_best = row is not None and row["mean"] is not None and row["mean"] == best
            text = f"**{text}**" if is_best and len(grid.lines) > 1 else text
            if row is not None and _is_number(row.get("val_mean")):
                text += f" (val {mean_std(row, 'val_')})" + (" †" if row is marked else "")
            cells.append(text)
        lines.append(_md_line([", ".join(_text(value) for value in label), *cells]))
    return "\n".join(lines) + "\n" + _notes(rows)


def swept_field(grid: Grid) -> str | None:
    """The field whose values a sweep's grid layout puts in columns: `noise.rate` when the grid
    varies it, else the last other field it varies on its own (neither the loss, nor the seed,
    nor fields linked to others)."""
    varying = [name for name, values in grid.items() if len(values) > 1 and LINK not in name
               and name not in ("loss", SEED)]
    if "noise.rate" in varying:
        return "noise.rate"
    return varying[-1] if varying else None


def _flat_markdown(rows: list[Row], fields: list[str]) -> str:
    validation = any(_is_number(row.get("val_mean")) for row in rows)
    marked = _marked(rows)
    figures = ["accuracy (%)", "n"] + (["noisy val accuracy (%)"] if validation else [])
    lines = [_md_line([*fields, *figures]), _md_line(["---"] * (len(fields) + len(figures)))]
    for row in rows:
        cells = [*(_text(row["cell"].get(name)) for name in fields), mean_std(row), str(row["n"])]
        if validation:
            cells.append(mean_std(row, "val_") + (" †" if row is marked else ""))
        lines.append(_md_line(cells))
    return "\n".join(lines) + "\n"


def _marked(rows: list[Row]) -> Row | None:
    """The row of the highest val_mean; None when no row has one."""
    chosen = _best_row(rows)
    return chosen[1] if chosen is not None and chosen[0] == "validation" else None


def _notes(rows: list[Row]) -> str:
    """Lines under a table with validation figures: the † row, the recommendation, Kendall's τ."""
    marked = _marked(rows)
    if marked is None:
        return ""
    cell = ", ".join(f"{name}={_text(value)}" for name, value in marked["cell"].items() if value is not None)
    lines = ["", f"† best by noisy validation: {cell or 'the only cell'} "
                 f"(val {mean_std(marked, 'val_')}, test {mean_std(marked)})"]
    chosen = recommendation(rows)
    if chosen is not None:
        lines.append(f"recommended: {describe_recommendation(chosen)}")
    tau = validation_test_kendall_tau(rows)
    if tau is not None:
        counted = sum(_is_number(r.get("val_mean")) and _is_number(r.get("mean")) for r in rows)
        lines.append(f"Kendall's τ between the validation and the test ranking: {tau:.2f} over {counted} cells")
    return "\n".join(lines) + "\n"


def describe_recommendation(chosen: dict) -> str:
    """"nce+rce, alpha 1, beta 10 (noisy validation 80.00%, test 84.00%)" of a recommendation."""
    parts = [str(chosen.get("loss"))]
    parts += [f"{name} {chosen[name]:g}" for name in ("alpha", "beta") if _is_number(chosen.get(name))]
    parts += [f"{name.partition('.')[2]} {value:g}" for name, value in (chosen.get("cell") or {}).items()
              if name.startswith("loss_params.") and _is_number(value)]
    figures = f"noisy validation {_percent(chosen.get('val_mean'))}, test {_percent(chosen.get('mean'))}"
    return f"{', '.join(parts)} ({figures})"


def _percent(value: float | None) -> str:
    return "–" if not _is_number(value) else f"{100 * value:.2f}%"


def mean_std(row: Row | None, prefix: str = "") -> str:
    """"mean ± std" in %, of the test figures or (prefix "val_") of the validation ones."""
    mean = None if row is None else row.get(prefix + "mean")
    std = None if row is None else row.get(prefix + "std")
    if mean is None:
        return "–"
    if std is None:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


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
