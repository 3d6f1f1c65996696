"""A job's suspected mislabels for the dashboard: its suspected_mislabels.csv (every training
sample, from the highest loss on its noisy label down, written when the job succeeds), read
once per job and kept (the newest KEPT), filtered by class and paged.

A sample is a suspect when the file flags it (`flagged`, from the label-quality report) or, in
a file without that column, when the final model predicts another class than its label.
"""

import csv
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

from shared.store import ObjectStore, artifact_key

FILE = "suspected_mislabels.csv"
REQUIRED = ("index", "noisy_label", "predicted", "confidence", "loss", "rank")
KEPT = 8  # jobs' files kept parsed in memory


@dataclass(frozen=True)
class Sample:
    """A training sample of the job, as its suspected_mislabels.csv describes it."""

    index: int  # in the data set's training set, as its jobs number them
    label: int  # the (noisy) label the job trained on
    predicted: int
    confidence: float  # the final model's probability of `predicted`
    loss: float
    rank: int  # 1: the highest loss
    self_confidence: float | None = None  # the label-quality report's figures, where the file has them
    margin: float | None = None
    flagged: bool | None = None

    @property
    def suspect(self) -> bool:
        return self.flagged if self.flagged is not None else self.predicted != self.label


class MalformedSuspects(ValueError):
    """A suspected_mislabels.csv that this code cannot read."""


def parse(data: bytes) -> list[Sample]:
    reader = csv.DictReader(io.StringIO(data.decode()))
    missing = set(REQUIRED) - set(reader.fieldnames or [])
    if missing:
        raise MalformedSuspects(f"{FILE} lacks the columns {sorted(missing)}")
    try:
        return [Sample(int(row["index"]), int(row["noisy_label"]), int(row["predicted"]), float(row["confidence"]),
                       float(row["loss"]), int(row["rank"]), _optional(row, "self_confidence"),
                       _optional(row, "margin"), row["flagged"] == "1" if row.get("flagged") else None)
                for row in reader]
    except (TypeError, ValueError) as exc:
        raise MalformedSuspects(f"{FILE} line {reader.line_num}: {exc}") from exc


def _optional(row: dict[str, str], name: str) -> float | None:
    value = row.get(name)
    return float(value) if value else None


_kept: OrderedDict[str, list[Sample]] = OrderedDict()
_lock = threading.Lock()


def read_samples(store: ObjectStore, job_id: str) -> list[Sample]:
    """The samples of a succeeded job's file (ObjectMissing when it has none); kept, as it never changes."""
    with _lock:
        if job_id in _kept:
            _kept.move_to_end(job_id)
            return _kept[job_id]
    samples = parse(store.get_bytes(artifact_key(job_id, FILE)))
    with _lock:
        _kept[job_id] = samples
        while len(_kept) > KEPT:
            _kept.popitem(last=False)
    return samples


def choose(samples: list[Sample], *, label: int | None = None, suspects_only: bool = True) -> list[Sample]:
    """The samples (suspects only, by default) with the given label (any, with None), by rank."""
    return [s for s in samples if (not suspects_only or s.suspect) and (label is None or s.label == label)]
