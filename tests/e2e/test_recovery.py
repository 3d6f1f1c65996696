"""A worker that dies mid-job: the job is requeued without a person and resumes from its checkpoint."""

from tests.e2e.conftest import (LEASE_TTL_S, FinishedJob, Workers, metrics, submit, wait_for_event,
                                wait_for_status)


def test_a_job_whose_worker_dies_resumes_from_its_last_checkpoint_on_another_worker(
        http, workers: Workers, trained_job: FinishedJob):
    """Killed after epoch 1, the job is requeued once its lease lapses (the API's reaper), taken by
    the next worker, resumed from resume.pt, and ends exactly where an uninterrupted run ends."""
    victim = workers.ensure_running()
    job = submit(http)
    wait_for_event(http, job["id"], lambda e: e["type"] == "epoch" and e["epoch"] == 1)
    victim.kill()

    requeued = wait_for_status(http, job["id"], {"queued"}, timeout_s=LEASE_TTL_S + 30)
    assert requeued["attempts"] == 1
    workers.start()
    finished = wait_for_status(http, job["id"], {"succeeded", "failed", "cancelled"})

    assert finished["status"] == "succeeded", finished["error"]
    assert finished["attempts"] == 2
    assert finished["result"]["resumed_from_epoch"] == 1
    statuses = [e["status"] for e in metrics(http, job["id"])["events"] if e["type"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]
    uninterrupted = trained_job.job["result"]
    assert finished["result"]["final_test_accuracy"] == uninterrupted["final_test_accuracy"]
