"""The Celery worker: `celery -A worker.app worker -Q train`, one per GPU (or per CPU machine).

Delivery is configured once for producer and consumer in shared.queue.make_celery: late
acknowledgement, one message prefetched per pool thread, a visibility timeout longer than any
job. What only the worker needs is set here: the task runs in a thread of the worker's
long-lived process (worker.dispatch), which starts a training process only for a job it takes;
the pool has one thread per slot of the worker (worker.packing), whatever `-c` says.
"""

import logging
from typing import Any

from celery import bootsteps, signals

from shared.queue import TRAIN_TASK, make_celery
from shared.settings import get_settings
from shared.workers import Reporter
from worker.data_files import held
from worker.dispatch import SERVICE_ERRORS, GivenBack, current_packer, dispatch, start_packing, start_process_server

log = logging.getLogger(__name__)

app = make_celery(get_settings())
app.conf.update(
    worker_pool="threads",  # the task looks at the database and waits for its training process
    worker_cancel_long_running_tasks_on_connection_loss=False,  # the job's lease, not the broker, says who trains it
)

# A start refused for want of the database or the store is tried again later, backing off.
app.task(name=TRAIN_TASK, autoretry_for=(*SERVICE_ERRORS, GivenBack), retry_backoff=True, retry_backoff_max=300,
         max_retries=None)(dispatch)


@signals.worker_init.connect
def size_pool(sender: Any, **kwargs: Any) -> None:
    """Before the pool starts: one thread per slot of this worker, so that a worker with every
    slot busy holds no further message (prefetch is one per thread)."""
    sender.concurrency = start_packing(get_settings()).slots  # the banner shows it: "concurrency: N (thread)"


class ProcessServer(bootsteps.StartStopStep):
    """At worker start, the fork server of training processes begins importing torch."""

    def start(self, worker: Any) -> None:
        start_process_server()


class Report(bootsteps.StartStopStep):
    """While the worker runs, it tells the API which data sets it holds and how many of its slots
    are busy (shared.workers), at once when a job starts or ends."""

    def start(self, worker: Any) -> None:
        settings = get_settings()
        packer = current_packer()
        self.reporter = Reporter(worker.hostname, settings, lambda: held(settings.data_dir, settings.allow_download),
                                 packer.capacity)
        packer.listeners.append(self.reporter.wake)
        self.reporter.start()
        log.info("this worker runs %s", packer.describe())

    def stop(self, worker: Any) -> None:
        self.reporter.stop()


app.steps["worker"].update({ProcessServer, Report})
