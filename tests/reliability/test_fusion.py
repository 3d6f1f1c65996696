"""A sweep's jobs trained together by a real worker (worker.fused) end with the results they
get alone, each with its own events and artifacts; NOISYFIT_FUSE=false trains them alone."""

import io
import json
import re
from typing import Any

import torch

from tests.reliability.conftest import TINY_SPEC, events_of, wait_status

BASE = {**TINY_SPEC, "epochs": 1}
GRID = {"loss": ["ce", "gce"]}
ENDED = {"succeeded", "failed", "cancelled"}
TIMING = {"epoch_seconds", "samples_per_second", "id", "time"}


def run_sweep(http: Any) -> list[str]:
    response = http.post("/v1/sweeps", json={"base": BASE, "grid": GRID})
    assert response.status_code == 201, response.text
    ids = response.json()["jobs"]
    for job_id in ids:
        assert wait_status(http, job_id, ENDED, timeout_s=600)["status"] == "succeeded"
    return ids


def artifact(http: Any, job_id: str, name: str) -> bytes:
    response = http.get(f"/v1/jobs/{job_id}/artifacts/{name}", follow_redirects=True)
    response.raise_for_status()
    return response.content


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_a_sweep_trains_together_to_the_results_of_its_jobs_alone_and_a_setting_turns_it_off(make_stack: Any):
    stack = make_stack()
    http = stack.client("sweeper")
    alone_worker = stack.start_worker({"NOISYFIT_FUSE": "false"})
    alone = run_sweep(http)
    alone_worker.stop()
    worker = stack.start_worker()
    together = run_sweep(http)

    log = worker.log.read_text(errors="replace")
    assert f"job {together[0]}: took 1 queued jobs of its sweep to train with it: {together[1]}" in log, log
    assert len(re.findall(r"training in process", log)) == 1, log
    assert "training together" not in alone_worker.log.read_text(errors="replace")
    for a, b in zip(alone, together):
        ra, rb = (json.loads(artifact(http, job_id, "result.json")) for job_id in (a, b))
        assert ra["timings"]["fused_runs"] == 1 and rb["timings"]["fused_runs"] == 2
        assert without_timing(ra["history"]) == without_timing(rb["history"])
        assert ra["final_test_accuracy"] == rb["final_test_accuracy"]
        wa, wb = (torch.load(io.BytesIO(artifact(http, job_id, "checkpoint.pt")), weights_only=True)["model"]
                  for job_id in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)  # on CPU, bit for bit
        events = [events_of(http, job_id) for job_id in (a, b)]
        assert [e["type"] for e in events[1] if e["type"] in ("epoch", "done")] == ["epoch", "done"]
        epoch = [without_timing([e for e in evs if e["type"] == "epoch"]) for evs in events]
        assert epoch[0] == epoch[1]
