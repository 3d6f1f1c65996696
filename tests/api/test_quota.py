"""The job-time quota, on PostgreSQL and SQLite: run time in the last 24 h, from the job rows."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.main import create_app
from shared import jobs, sweep_service
from shared.db import get_engine
from shared.errors import TimeQuotaExceeded
from shared.models import Job, JobStatus, User, utcnow
from shared.settings import Settings

SPEC = {"dataset": "mnist", "epochs": 1}
HOUR = 3600


def quota_user(session: Session, spans: list[tuple[float, float | None]]) -> int:
    """A user whose jobs ran from hours_ago[0] to hours_ago[1] (None: still running)."""
    user = User(name="quota")
    session.add(user)
    session.commit()
    now = utcnow()
    for start, end in spans:
        session.add(Job(user_id=user.id, spec={}, status=JobStatus.running if end is None else JobStatus.succeeded,
                        started_at=now - timedelta(hours=start),
                        finished_at=None if end is None else now - timedelta(hours=end)))
    session.commit()
    return user.id


def test_a_submission_past_the_quota_says_what_was_used_and_when_it_frees(session, db_settings):
    settings = db_settings.model_copy(update={"job_time_quota_s": 9000})
    user_id = quota_user(session, [(30, 25), (25, 23), (0.5, None), (3, 1.5)])  # 1 h + 0.5 h + 1.5 h in the window
    with pytest.raises(TimeQuotaExceeded) as refused:
        jobs.create_job(session, user_id, SPEC, settings, enqueue=lambda _: None)
    assert refused.value.code == "job_time_quota_exceeded"
    assert "ran 10800 s in the last 24 h, your quota is 9000 s" in refused.value.message
    # 0.5 h must leave the window: half of the job that ran from 25 h to 23 h ago
    wait = int(refused.value.headers["Retry-After"])
    assert HOUR / 2 - 5 <= wait <= HOUR / 2 + 5, wait
    with pytest.raises(TimeQuotaExceeded):
        sweep_service.create_sweep(session, user_id, SPEC, settings, grid={"seed": [1, 2]}, enqueue=lambda _: None)


def test_under_the_quota_or_without_one_a_job_is_accepted(session, db_settings):
    user_id = quota_user(session, [(30, 25), (2, 1)])
    job, created = jobs.create_job(session, user_id, SPEC, db_settings.model_copy(update={"job_time_quota_s": 2 * HOUR}),
                                   enqueue=lambda _: None)
    assert created and job.status == JobStatus.queued
    busy = quota_user(session, [(20, 0)])
    assert jobs.create_job(session, busy, SPEC, db_settings, enqueue=lambda _: None)[1]  # 0: no quota


def test_the_api_answers_429_with_the_code_and_retry_after(settings: Settings, admin_headers):
    with TestClient(create_app(settings.model_copy(update={"job_time_quota_s": 60}))) as client:
        key = client.post("/v1/api-keys", json={"name": "quota-api"}, headers=admin_headers).json()
        with Session(get_engine(settings.database_url)) as session:
            session.add(Job(user_id=key["user_id"], spec={}, status=JobStatus.succeeded,
                            started_at=utcnow() - timedelta(hours=2), finished_at=utcnow() - timedelta(hours=1)))
            session.commit()
        response = client.post("/v1/jobs", json=SPEC, headers={"Authorization": f"Bearer {key['key']}"})
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "job_time_quota_exceeded" and "ran 3600 s in the last 24 h" in error["message"]
    assert 0 < int(response.headers["Retry-After"]) <= 23 * HOUR
