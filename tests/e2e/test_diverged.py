"""A run that diverges, through the queue and a real worker: failed with `diverged` and what to change."""

import json

from tests.e2e.conftest import FINISHED, metrics, submit, wait_for_status

# lr 10 with momentum 0.999, weight decay 1 and no clipping: NaN within the first epoch on 100 images
DIVERGING = {"lr": 10.0, "momentum": 0.999, "weight_decay": 1.0, "grad_clip": 0.0, "batch_size": 4,
             "schedule": "constant", "train_size": 100, "epochs": 2, "noise": {"type": "none"}, "loss": "ce"}


def test_a_diverging_job_fails_with_diverged_and_its_events_stay_valid_json(http, worker):
    job = submit(http, **DIVERGING)
    done = wait_for_status(http, job["id"], FINISHED, timeout_s=240)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "diverged" and "Lower lr (now 10)" in done["error"]["message"], done["error"]
    events = metrics(http, job["id"])["events"]
    assert not any(event["type"] == "epoch" for event in events)  # a non-finite epoch is never reported
    for event in events:
        json.loads(json.dumps(event, allow_nan=False))  # strict JSON: no NaN anywhere
