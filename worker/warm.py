"""The fork server's warm-up, so that every training process forked from it starts warm.

The fork server imports this module once, at worker start, beside worker.tasks
(worker.dispatch.start_process_server); importing it is what warms a process. It

- loads the built-in data sets this worker has on disk and keeps them (worker.datasets.keep): a
  job's process finds its data set in memory, shared copy-on-write with the fork server and every
  other job's process, instead of reading it again (bench/README.md, "Fixed costs of a job");
- imports the database driver, which a job would import at its first query.

Measured in processes forked from a fork server with and without this module (bench/README.md):
the data set no longer costs its load (130 ms for Fashion-MNIST), the first query 60 ms less.
What stays warm here is host memory; on a GPU the data holder, forked from this server, keeps
the images on the device for every job (worker.resident).

Nothing here touches CUDA (a process forked once CUDA started cannot use it) or runs torch
operations (their thread pools do not survive a fork well). A step that fails is logged and
skipped: a cold start is slower, never wrong.
"""

from __future__ import annotations

import logging

from shared.db import database_url
from shared.settings import Settings, get_settings
from worker.data_files import holds
from worker.datasets import DATASETS, keep, load_dataset

log = logging.getLogger(__name__)


def _load_datasets(settings: Settings) -> None:
    for name in DATASETS:
        if holds(name, settings.data_dir, download=False):
            keep(load_dataset(name, settings.data_dir), settings.data_dir)


def _import_database_driver(settings: Settings) -> None:
    database_url(settings.database_url).get_dialect().import_dbapi()


def warm(settings: Settings) -> None:
    for step in (_import_database_driver, _load_datasets):
        try:
            step(settings)
        except Exception:
            log.exception("the fork server's warm-up step %s failed; jobs start without it", step.__name__)


warm(get_settings())
