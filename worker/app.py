"""The Celery worker: `celery -A worker.app worker -Q train -c 1`, one per GPU.

Delivery is configured once for producer and consumer in shared.queue.make_celery: late
acknowledgement, one message prefetched, a visibility timeout longer than any job. What only
the worker needs is set here: the task runs in a thread of the worker's long-lived process
(worker.dispatch), which starts a training process only for a job it takes.
"""

from typing import Any

from celery import bootsteps

from shared.queue import TRAIN_TASK, make_celery
from shared.settings import get_settings
from shared.workers import Reporter
from worker.data_files import held
from worker.dispatch import SERVICE_ERRORS, GivenBack, dispatch, start_process_server

app = make_celery(get_settings())
app.conf.update(
    worker_pool="threads",  # the task looks at the database and waits for its training process
    worker_concurrency=1,  # one job at a time: it has the whole GPU
    worker_cancel_long_running_tasks_on_connection_loss=False,  # the job's lease, not the broker, says who trains it
)

# A start refused for want of the database or the store is tried again later, backing off.
app.task(name=TRAIN_TASK, autoretry_for=(*SERVICE_ERRORS, GivenBack), retry_backoff=True, retry_backoff_max=300,
         max_retries=None)(dispatch)


class ProcessServer(bootsteps.StartStopStep):
    """At worker start, the fork server of training processes begins importing torch."""

    def start(self, worker: Any) -> None:
        start_process_server()


class Report(bootsteps.StartStopStep):
    """While the worker runs, it tells the API which data sets it holds (shared.workers)."""

    def start(self, worker: Any) -> None:
        settings = get_settings()
        self.reporter = Reporter(worker.hostname, settings, lambda: held(settings.data_dir, settings.allow_download))
        self.reporter.start()

    def stop(self, worker: Any) -> None:
        self.reporter.stop()


app.steps["worker"].update({ProcessServer, Report})
