"""The Celery worker: `celery -A worker.app worker -Q train -c 1`, one per GPU.

Delivery is configured once for producer and consumer in shared.queue.make_celery: late
acknowledgement, redelivery of a task whose worker process died, one message prefetched, a
visibility timeout longer than any job. What only the worker needs is set here.
"""

from shared.queue import TRAIN_TASK, make_celery
from shared.settings import get_settings
from worker.tasks import SERVICE_ERRORS, train_job

app = make_celery(get_settings())
app.conf.update(
    worker_concurrency=1,  # one job at a time: it has the whole GPU
    worker_max_tasks_per_child=1,  # a fresh process per job hands all its GPU memory back
    worker_cancel_long_running_tasks_on_connection_loss=False,  # the job's lease, not the broker, says who trains it
)

# A start refused for want of the database or the store is tried again later, backing off.
app.task(name=TRAIN_TASK, autoretry_for=SERVICE_ERRORS, retry_backoff=True, retry_backoff_max=300,
         max_retries=None)(train_job)
