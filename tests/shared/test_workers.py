"""Worker reports in the real Redis: a worker is live while its report lives, and the fleet says
which data sets a job can run on, what a queued job waits for, and what to install."""

import json
import secrets
import time

import pytest

from shared.catalog import catalog
from shared.settings import Settings
from shared.stream import redis_client
from shared.workers import Fleet, WaitingFor, WorkerReport, read_fleet, report, with_fleet, withdraw


@pytest.fixture
def fleet_settings(settings: Settings) -> Settings:
    """A Redis prefix of this test only: no other test's workers in its fleet."""
    prefix = f"{settings.redis_key_prefix}fleet{secrets.token_hex(3)}:"
    return settings.model_copy(update={"redis_key_prefix": prefix, "worker_report_s": 0.2})


def test_a_worker_is_live_while_its_report_lives(fleet_settings):
    assert read_fleet(fleet_settings).workers == ()
    report(fleet_settings, WorkerReport("a@host", ("fashion-mnist",), time.time()))
    report(fleet_settings, WorkerReport("b@host", ("mnist", "cifar10"), time.time()))
    assert [(w.name, w.datasets) for w in read_fleet(fleet_settings).workers] == [
        ("a@host", ("fashion-mnist",)), ("b@host", ("mnist", "cifar10"))]

    withdraw(fleet_settings, "b@host")  # a worker that stops
    assert [w.name for w in read_fleet(fleet_settings).workers] == ["a@host"]

    time.sleep(fleet_settings.worker_report_s * 3 + 0.3)  # a worker killed -9: its report lapses
    assert read_fleet(fleet_settings).workers == ()


def test_the_fleet_says_who_can_run_a_data_set(settings):
    fleet = Fleet((WorkerReport("a@host", ("fashion-mnist",), 0.0), WorkerReport("b@host", ("fashion-mnist", "mnist"), 0.0)))
    assert fleet.holders("fashion-mnist") == 2 and fleet.holders("mnist") == 1 and fleet.holders("cifar10") == 0
    assert fleet.holders("ds_0123abcd") == 2  # an upload comes from the object store: every worker has it
    assert fleet.unavailable("mnist", settings) is None
    message = fleet.unavailable("cifar10", settings)
    assert "'cifar10'" in message and "a@host, b@host" in message
    assert "NOISYFIT_DATA_DIR" in message and "NOISYFIT_ALLOW_DOWNLOAD=true" in message
    only_mnist = Fleet((WorkerReport("c@host", ("mnist",), 0.0),))
    assert "apt-get install dataset-fashion-mnist" in only_mnist.unavailable("fashion-mnist", settings)
    assert Fleet(()).unavailable("cifar10", settings) is None  # no worker at all: accepted, it waits
    assert [fleet.waiting_for(d) for d in ("mnist", "cifar10")] == [WaitingFor.queue, WaitingFor.dataset]
    assert Fleet(()).waiting_for("mnist") == WaitingFor.worker


def test_a_report_carries_the_workers_slots_and_queued_jobs_wait_for_a_free_one(fleet_settings):
    report(fleet_settings, WorkerReport("a@host", ("fashion-mnist",), time.time(), slots=2, busy=2, device="cpu"))
    report(fleet_settings, WorkerReport("b@host", ("mnist",), time.time(), slots=8, busy=3, device="cuda"))
    fleet = read_fleet(fleet_settings)
    assert [(w.name, w.slots, w.busy, w.device) for w in fleet.workers] == [("a@host", 2, 2, "cpu"),
                                                                           ("b@host", 8, 3, "cuda")]
    assert (fleet.slots, fleet.busy) == (10, 5)
    assert fleet.free_slots("fashion-mnist") == 0 and fleet.free_slots("mnist") == 5
    assert fleet.free_slots("ds_0123abcd") == 5  # every worker holds an upload
    assert [fleet.waiting_for(d) for d in ("fashion-mnist", "mnist", "cifar10")] == [
        WaitingFor.slot, WaitingFor.queue, WaitingFor.dataset]


def test_a_report_from_before_packing_reads_as_one_slot(fleet_settings):
    redis_client(fleet_settings.redis_url).set(f"{fleet_settings.redis_key_prefix}noisyfit:workers:old@host",
                                               json.dumps({"datasets": ["mnist"], "reported_at": time.time()}))
    redis_client(fleet_settings.redis_url).zadd(f"{fleet_settings.redis_key_prefix}noisyfit:workers",
                                                {"old@host": time.time()})
    (old,) = read_fleet(fleet_settings).workers
    assert (old.slots, old.busy, old.device) == (1, 0, "")
    assert read_fleet(fleet_settings).waiting_for("mnist") == WaitingFor.queue


def test_the_catalog_shows_live_workers_per_data_set():
    fleet = Fleet((WorkerReport("a@host", ("fashion-mnist",), 0.0),))
    shown = with_fleet(catalog(), fleet)
    assert shown["live_workers"] == 1 and shown["slots"] == {"total": 1, "busy": 0}
    assert shown["datasets"]["fashion-mnist"]["free_slots"] == 1 and shown["datasets"]["mnist"]["free_slots"] == 0
    assert shown["datasets"]["fashion-mnist"]["workers"] == 1 and shown["datasets"]["fashion-mnist"]["available"]
    assert shown["datasets"]["mnist"]["workers"] == 0 and not shown["datasets"]["mnist"]["available"]
    assert shown["datasets"]["mnist"]["num_classes"] == 10  # the catalog's own fields stay
    unknown = with_fleet(catalog(), None)
    assert unknown["live_workers"] is None and unknown["datasets"]["mnist"]["available"] is None
    assert unknown["slots"] is None
