"""take_siblings: a worker that took a job of a sweep also takes the queued jobs of that sweep
that can train with it (shared.fusion), each under its own lease; on PostgreSQL and SQLite."""

from sqlmodel import Session

from shared import jobs
from shared.models import Job, JobStatus, User
from shared.settings import Settings
from shared.sweep_service import create_sweep

BASE = {"dataset": "mnist", "epochs": 2, "train_size": 400}


def sweep_jobs(session: Session, settings: Settings, grid: dict, name: str = "fuser") -> list[str]:
    user = User(name=name)
    session.add(user)
    session.commit()
    return create_sweep(session, user.id, BASE, settings, grid=grid, enqueue=lambda _: None).job_ids


def job(session: Session, job_id: str) -> Job:
    session.expire_all()
    return session.get(Job, job_id)


def test_the_queued_jobs_of_its_sweep_that_share_its_shape_are_taken_with_it(session, db_settings):
    # cells in order: (ce, 128), (ce, 64), (gce, 128), (gce, 64), (mae, 128), (mae, 64)
    ids = sweep_jobs(session, db_settings, {"loss": ["ce", "gce", "mae"], "batch_size": [128, 64]})
    assert jobs.start_attempt(session, ids[0], "w1", db_settings)
    jobs.request_cancel(session, job(session, ids[4]).user_id, ids[4], db_settings)  # a cancelled one stays

    assert jobs.take_siblings(session, ids[0], "w1", db_settings) == [ids[2]]
    taken = job(session, ids[2])
    assert taken.status == JobStatus.running and taken.lease_owner == "w1" and taken.attempts == 1
    assert all(job(session, i).status == JobStatus.queued for i in (ids[1], ids[3], ids[5]))
    assert jobs.take_siblings(session, ids[0], "w2", db_settings) == []  # nothing of its shape waits


def test_at_most_fuse_max_runs_train_together_and_the_oldest_go_first(session, db_settings):
    ids = sweep_jobs(session, db_settings, {"seed": [0, 1, 2, 3, 4]})
    three = db_settings.model_copy(update={"fuse_max_runs": 3})
    assert jobs.start_attempt(session, ids[2], "w1", three)
    assert jobs.take_siblings(session, ids[2], "w1", three) == [ids[0], ids[1]]
    assert jobs.start_attempt(session, ids[3], "w2", three)
    assert jobs.take_siblings(session, ids[3], "w2", three) == [ids[4]]


def test_with_fusion_off_or_without_a_sweep_a_job_is_taken_alone(session, db_settings):
    ids = sweep_jobs(session, db_settings, {"seed": [0, 1]})
    off = db_settings.model_copy(update={"fuse": False})
    assert jobs.start_attempt(session, ids[0], "w1", off)
    assert jobs.take_siblings(session, ids[0], "w1", off) == []
    assert job(session, ids[1]).status == JobStatus.queued

    single, _ = jobs.create_job(session, job(session, ids[0]).user_id, BASE, db_settings, enqueue=lambda _: None)
    other, _ = jobs.create_job(session, job(session, ids[0]).user_id, {**BASE, "seed": 3}, db_settings,
                               enqueue=lambda _: None)
    assert jobs.start_attempt(session, single.id, "w2", db_settings)
    assert jobs.take_siblings(session, single.id, "w2", db_settings) == []
    assert job(session, other.id).status == JobStatus.queued


def test_jobs_of_another_user_or_sweep_are_not_taken(session, db_settings):
    mine = sweep_jobs(session, db_settings, {"seed": [0, 1]}, "me")
    theirs = sweep_jobs(session, db_settings, {"seed": [0, 1]}, "them")
    other_sweep = sweep_jobs(session, db_settings, {"seed": [2, 3]}, "me too")
    assert jobs.start_attempt(session, mine[0], "w1", db_settings)
    assert jobs.take_siblings(session, mine[0], "w1", db_settings) == [mine[1]]
    assert all(job(session, i).status == JobStatus.queued for i in theirs + other_sweep)


def test_a_sibling_that_does_not_fit_stays_queued_and_no_more_are_taken(session, db_settings):
    ids = sweep_jobs(session, db_settings, {"seed": [0, 1, 2, 3]})
    assert jobs.start_attempt(session, ids[0], "w1", db_settings)
    asked = []

    def fits(job_id, spec):  # room for one more run (a GPU worker's memory: worker.packing)
        asked.append((job_id, spec.seed))
        return len(asked) < 2

    assert jobs.take_siblings(session, ids[0], "w1", db_settings, fits) == [ids[1]]
    assert asked == [(ids[1], 1), (ids[2], 2)]
    assert all(job(session, i).status == JobStatus.queued and job(session, i).attempts == 0 for i in ids[2:])
