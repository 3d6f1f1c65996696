"""The Celery side both processes agree on; the API sends tasks by name, without the worker code."""

from celery import Celery

from shared.settings import Settings, get_settings
from shared.stream import redis_client

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
    """Enqueue the training of a stored job, and note that it was sent (see claim_resends);
    raises kombu/redis errors when the broker is down."""
    settings = settings or get_settings()
    _producer(settings).send_task(TRAIN_TASK, args=[job_id], queue=TRAIN_QUEUE, retry=False)
    redis_client(settings.redis_url).set(_sent_key(settings, job_id), 1, px=_resend_ms(settings))


def claim_resends(job_ids: list[str], settings: Settings) -> list[str]:
    """Those of the queued jobs whose message was last sent more than settings.resend_after_s ago
    (or never, or the note was lost with Redis), each claimed for one re-send: a second caller,
    another API replica, gets none of them until resend_after_s has passed again."""
    if not job_ids:
        return []
    pipe = redis_client(settings.redis_url).pipeline(transaction=False)
    for job_id in job_ids:
        pipe.set(_sent_key(settings, job_id), 1, px=_resend_ms(settings), nx=True)
    return [job_id for job_id, claimed in zip(job_ids, pipe.execute()) if claimed]


def _sent_key(settings: Settings, job_id: str) -> str:
    return f"{settings.redis_key_prefix}noisyfit:jobs:{job_id}:sent"


def _resend_ms(settings: Settings) -> int:
    return max(1, int(settings.resend_after_s * 1000))


def queue_key(settings: Settings) -> str:
    """The Redis list holding the waiting train tasks (LLEN gives the queue depth)."""
    return settings.redis_key_prefix + TRAIN_QUEUE
