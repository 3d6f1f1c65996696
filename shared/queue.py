"""The Celery side both processes agree on; the API sends tasks by name, without the worker code."""

from celery import Celery

from shared.settings import Settings, get_settings

TRAIN_TASK = "noisyfit.train"
TRAIN_QUEUE = "train"


def make_celery(settings: Settings, *, fail_fast: bool = False) -> Celery:
    """The Celery app of the API (producer) and of worker/app.py (consumer): one configuration.

    `fail_fast`: connect once when sending, so that a down broker answers at once (the API
    turns it into a 503) instead of after seconds of retries.
    """
    retries = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1} if fail_fast else {}
    app = Celery("noisyfit", broker=settings.redis_url)
    app.conf.update(
        task_default_queue=TRAIN_QUEUE,
        task_routes={TRAIN_TASK: {"queue": TRAIN_QUEUE}},
        task_acks_late=True,  # a task whose worker dies is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # training tasks are long: take one at a time
        task_ignore_result=True,  # state lives in the database
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "global_keyprefix": settings.redis_key_prefix,
            **retries,
        },
    )
    return app


_producers: dict[tuple[str, str], Celery] = {}


def _producer(settings: Settings) -> Celery:
    key = (settings.redis_url, settings.redis_key_prefix)
    if key not in _producers:
        _producers[key] = make_celery(settings, fail_fast=True)
    return _producers[key]


def send_train(job_id: str, settings: Settings | None = None) -> None:
    """Enqueue the training of a stored job; raises kombu/redis errors when the broker is down."""
    settings = settings or get_settings()
    _producer(settings).send_task(TRAIN_TASK, args=[job_id], queue=TRAIN_QUEUE, retry=False)


def queue_key(settings: Settings) -> str:
    """The Redis list holding the waiting train tasks (LLEN gives the queue depth)."""
    return settings.redis_key_prefix + TRAIN_QUEUE
