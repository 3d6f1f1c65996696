"""Job state changes are compare-and-set: on PostgreSQL and SQLite alike, nothing moves a job twice."""

import threading
from datetime import timedelta

import pytest
from sqlmodel import Session

from shared import jobs
from shared.db import get_engine
from shared.models import Job, JobStatus, User, utcnow
from shared.settings import Settings

SPEC = {"dataset": "mnist", "epochs": 3}


@pytest.fixture
def job_id(session: Session, db_settings: Settings) -> str:
    user = User(name="worker-test")
    session.add(user)
    session.commit()
    job, _ = jobs.create_job(session, user.id, SPEC, db_settings, enqueue=lambda _: None)
    return job.id


def reload(session: Session, job_id: str) -> Job:
    session.expire_all()
    return session.get(Job, job_id)


def test_a_queued_job_is_taken_once(session, db_settings, job_id):
    assert jobs.start_attempt(session, job_id, "w1", db_settings)
    assert not jobs.start_attempt(session, job_id, "w2", db_settings)  # w1's lease lives
    job = reload(session, job_id)
    assert job.status == "running" and job.lease_owner == "w1" and job.attempts == 1
    assert job.started_at is not None and job.lease_expires_at > utcnow()


def test_concurrent_starts_have_one_winner(db_settings, job_id):
    engine = get_engine(db_settings.database_url)
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def start(worker: str) -> None:
        with Session(engine) as own:
            barrier.wait()
            if jobs.start_attempt(own, job_id, worker, db_settings):
                wins.append(worker)

    threads = [threading.Thread(target=start, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_a_lapsed_lease_is_taken_over_and_counted(session, db_settings, job_id):
    short = db_settings.model_copy(update={"lease_ttl_s": -1})  # the lease lapses at once
    assert jobs.start_attempt(session, job_id, "w1", short)
    first_start = reload(session, job_id).started_at
    assert jobs.start_attempt(session, job_id, "w2", db_settings)
    job = reload(session, job_id)
    assert job.lease_owner == "w2" and job.attempts == 2 and job.started_at == first_start
    assert not jobs.renew_lease(session, job_id, "w1", db_settings)  # w1 lost it
    assert not jobs.finish(session, job_id, "w1", JobStatus.succeeded, db_settings)
    assert reload(session, job_id).status == "running"


def test_only_the_owner_renews_and_reports(session, db_settings, job_id):
    assert jobs.start_attempt(session, job_id, "w1", db_settings)
    before = reload(session, job_id).lease_expires_at
    assert jobs.renew_lease(session, job_id, "w1", db_settings)
    assert reload(session, job_id).lease_expires_at >= before
    assert not jobs.renew_lease(session, job_id, "w2", db_settings)
    assert jobs.update_progress(session, job_id, "w1", 1, 3, {"test_accuracy": 0.5})
    assert not jobs.update_progress(session, job_id, "w2", 2, 3, {"test_accuracy": 0.9})
    assert reload(session, job_id).progress == {"epoch": 1, "epochs": 3, "metrics": {"test_accuracy": 0.5}}


def test_a_finished_job_cannot_move(session, db_settings, job_id):
    assert jobs.start_attempt(session, job_id, "w1", db_settings)
    result = {"final_test_accuracy": 0.9, "best_test_accuracy": 0.92}
    assert jobs.finish(session, job_id, "w1", JobStatus.succeeded, db_settings, result=result)
    assert not jobs.finish(session, job_id, "w1", JobStatus.failed, db_settings, error={"code": "x", "message": "y"})
    assert not jobs.start_attempt(session, job_id, "w2", db_settings)
    assert not jobs.renew_lease(session, job_id, "w1", db_settings)
    assert job_id not in jobs.requeue_stale(session, db_settings, now=utcnow() + timedelta(days=1),
                                            enqueue=lambda _: None)
    job = reload(session, job_id)
    assert job.status == "succeeded" and job.result == result and job.error is None and job.finished_at


def test_finish_takes_only_a_final_state(session, db_settings, job_id):
    assert jobs.start_attempt(session, job_id, "w1", db_settings)
    with pytest.raises(ValueError):
        jobs.finish(session, job_id, "w1", JobStatus.queued, db_settings)


def test_a_stale_running_job_is_requeued_and_sent_again(session, db_settings, job_id):
    assert jobs.start_attempt(session, job_id, "w1", db_settings)
    sent: list[str] = []
    assert job_id not in jobs.requeue_stale(session, db_settings, enqueue=sent.append)  # lease still live
    later = utcnow() + timedelta(seconds=db_settings.lease_ttl_s + 1)
    assert job_id in jobs.requeue_stale(session, db_settings, now=later, enqueue=sent.append)
    assert job_id in sent
    job = reload(session, job_id)
    assert job.status == "queued" and job.lease_owner is None and job.attempts == 1
    assert jobs.start_attempt(session, job_id, "w2", db_settings)
    assert reload(session, job_id).attempts == 2


def test_a_queued_job_no_worker_took_is_sent_again_once_per_interval(session, db_settings, job_id):
    """The job was stored without a message, as when the API dies between commit and send."""
    sent: list[str] = []
    assert job_id not in jobs.resend_waiting(session, db_settings, enqueue=sent.append)  # not waiting long yet
    later = utcnow() + timedelta(seconds=db_settings.resend_after_s + 1)
    assert job_id in jobs.resend_waiting(session, db_settings, now=later, enqueue=sent.append)
    assert job_id not in jobs.resend_waiting(session, db_settings, now=later, enqueue=sent.append)  # claimed
    assert sent.count(job_id) == 1
    assert reload(session, job_id).status == "queued" and reload(session, job_id).attempts == 0
    assert jobs.start_attempt(session, job_id, "w1", db_settings)
    much_later = later + timedelta(seconds=db_settings.resend_after_s + 1)
    assert job_id not in jobs.resend_waiting(session, db_settings, now=much_later, enqueue=sent.append)


def test_a_job_sent_recently_is_not_sent_again(session, db_settings):
    user = User(name="resend-test")
    session.add(user)
    session.commit()
    job, _ = jobs.create_job(session, user.id, SPEC, db_settings)  # sent to the (worker-less) queue
    later = utcnow() + timedelta(seconds=db_settings.resend_after_s + 1)
    assert job.id not in jobs.resend_waiting(session, db_settings, now=later, enqueue=lambda _: None)


def test_a_job_that_keeps_dying_fails_after_max_attempts(session, db_settings, job_id):
    settings = db_settings.model_copy(update={"max_attempts": 2, "lease_ttl_s": -1})
    for worker in ("w1", "w2"):
        assert jobs.start_attempt(session, job_id, worker, settings)
        if worker == "w1":
            assert job_id in jobs.requeue_stale(session, settings, enqueue=lambda _: None)
    assert not jobs.start_attempt(session, job_id, "w3", settings)  # a redelivered message
    assert job_id not in jobs.requeue_stale(session, settings, enqueue=lambda _: None)
    job = reload(session, job_id)
    assert job.status == "failed" and job.error["code"] == "too_many_attempts" and job.finished_at


def test_a_stale_job_asked_to_cancel_is_cancelled(session, db_settings, job_id):
    assert jobs.start_attempt(session, job_id, "w1", db_settings.model_copy(update={"lease_ttl_s": -1}))
    user_id = reload(session, job_id).user_id
    assert jobs.request_cancel(session, user_id, job_id, db_settings).cancel_requested
    assert not jobs.start_attempt(session, job_id, "w2", db_settings)
    assert job_id not in jobs.requeue_stale(session, db_settings, enqueue=lambda _: None)
    assert reload(session, job_id).status == "cancelled"


def test_a_cancelled_queued_job_is_never_started(session, db_settings, job_id):
    user_id = reload(session, job_id).user_id
    assert jobs.request_cancel(session, user_id, job_id, db_settings).status == "cancelled"
    assert not jobs.start_attempt(session, job_id, "w1", db_settings)


def test_status_changes_are_announced_on_the_stream(session, db_settings, job_id):
    from shared.stream import get_stream

    assert jobs.start_attempt(session, job_id, "w1", db_settings)
    assert jobs.finish(session, job_id, "w1", JobStatus.failed, db_settings,
                       error={"code": "diverged", "message": "the loss became NaN; lower lr"})
    events, _ = get_stream(db_settings).read(job_id)
    assert [(e["type"], e["status"]) for e in events] == [
        ("status", "queued"), ("status", "running"), ("status", "failed"), ("done", "failed")]
    assert events[1]["attempt"] == 1 and events[-1]["error"]["code"] == "diverged"
    ttl = get_stream(db_settings).client.ttl(get_stream(db_settings).key(job_id))
    assert 0 < ttl <= db_settings.stream_ttl_s


def test_non_finite_progress_figures_are_stored_as_null(session, db_settings, job_id):
    """A diverged run's NaN/Infinity: PostgreSQL's json type refuses them, so they are stored as null."""
    assert jobs.start_attempt(session, job_id, "w1", db_settings)
    figures = {"train_loss": float("nan"), "test_loss": float("-inf"), "test_accuracy": 0.1}
    assert jobs.update_progress(session, job_id, "w1", 1, 3, figures)
    stored = reload(session, job_id).progress
    assert stored == {"epoch": 1, "epochs": 3, "metrics": {"train_loss": None, "test_loss": None, "test_accuracy": 0.1}}
