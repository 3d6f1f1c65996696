"""docker-compose.yml and its CPU override, read as Compose reads them (no Docker engine needed)."""

import json
import re

import pytest

from shared.db import database_url
from shared.settings import Settings
from tests.deploy.conftest import ROOT, ENVIRONMENT, dockerfile_instructions, interpolate, load_compose

CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
APP_SERVICES = ("api", "worker")


def one_shot(service: dict) -> bool:
    return service.get("restart") == "no"


def test_both_files_are_valid_compose_documents():
    """The Compose specification (compose_spec's strict parser) accepts each file and the merge."""
    import compose_spec
    for names in (("docker-compose.yml",), ("docker-compose.yml", "docker-compose.cpu.yml")):
        document = load_compose(*names)
        compose_spec.PyCompose.from_json(json.dumps(document))
    compose_spec.PyCompose.from_yaml(interpolate((ROOT / "docker-compose.cpu.yml").read_text(), ENVIRONMENT))


def test_the_stack_has_every_part_of_the_design(compose):
    assert {"api", "worker", "redis", "postgres", "minio", "createbucket"} <= set(compose["services"])


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        if one_shot(service):
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_one_shot_services_are_awaited_to_completion(compose):
    """A one-shot job has no health to check; whoever needs it waits for it to exit 0."""
    services = compose["services"]
    for name in (n for n, s in services.items() if one_shot(s)):
        waiters = [s for s in services.values() if name in s.get("depends_on", {})]
        assert waiters, f"nothing waits for {name}"
        for service in waiters:
            assert service["depends_on"][name]["condition"] == "service_completed_successfully"


def test_depends_on_names_existing_services_with_a_condition_they_can_meet(compose):
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions, not a list"
        for dependency, rule in depends_on.items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert rule["condition"] in CONDITIONS
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} cannot become healthy"


def test_api_and_worker_start_after_the_data_stores_are_healthy(compose):
    for name in APP_SERVICES:
        depends_on = compose["services"][name]["depends_on"]
        for store in ("postgres", "redis", "minio"):
            assert depends_on[store]["condition"] == "service_healthy", (name, store)
        assert depends_on["createbucket"]["condition"] == "service_completed_successfully"


def test_the_worker_reserves_an_nvidia_gpu(compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d["driver"] == "nvidia" and "gpu" in d["capabilities"] and (d.get("count") == "all" or d.get("count", 0) >= 1)
        for d in devices
    )


def test_the_cpu_override_drops_the_gpu_and_builds_cpu_torch(compose_cpu):
    worker = compose_cpu["services"]["worker"]
    assert "deploy" not in worker
    assert "download.pytorch.org/whl/cpu" in worker["build"]["args"]["TORCH_INDEX_URL"]


def test_the_cpu_override_only_changes_services_of_the_base():
    base = load_compose("docker-compose.yml")["services"]
    override = load_compose("docker-compose.cpu.yml")["services"]
    assert set(override) <= set(base)


def test_application_settings_are_noisyfit_settings_fields(compose):
    """Every NOISYFIT_ variable is a field of shared.settings.Settings; a typo would be ignored silently."""
    fields = {f"NOISYFIT_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert isinstance(environment, dict)
        for key in environment:
            assert key.startswith("NOISYFIT_"), f"{name}: {key} lacks the NOISYFIT_ prefix"
            assert key in fields, f"{name}: {key} is no field of Settings"
        for needed in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY",
                       "S3_BUCKET", "DATA_DIR", "ADMIN_TOKEN"):
            assert f"NOISYFIT_{needed}" in environment, f"{name} lacks NOISYFIT_{needed}"


def test_api_and_worker_share_one_configuration(compose):
    services = compose["services"]
    assert services["api"]["environment"] == services["worker"]["environment"]


def test_settings_parse_the_compose_environment(compose):
    environment = compose["services"]["api"]["environment"]
    settings = Settings(**{key.removeprefix("NOISYFIT_").lower(): value for key, value in environment.items()})
    assert database_url(settings.database_url).drivername == "postgresql+psycopg"
    assert settings.s3_secure is False and settings.allow_download is True


def test_the_settings_point_at_the_services_of_the_stack(compose):
    services, environment = compose["services"], compose["services"]["api"]["environment"]
    postgres = services["postgres"]["environment"]
    user, password, database = postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]
    assert environment["NOISYFIT_DATABASE_URL"] == f"postgresql://{user}:{password}@postgres:5432/{database}"
    assert environment["NOISYFIT_REDIS_URL"].startswith("redis://redis:6379/")
    assert environment["NOISYFIT_S3_ENDPOINT"] == "minio:9000"
    minio = services["minio"]["environment"]
    assert environment["NOISYFIT_S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
    assert environment["NOISYFIT_S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert environment["NOISYFIT_S3_BUCKET"] == services["createbucket"]["environment"]["BUCKET"]


def test_the_admin_token_has_no_default():
    """`docker compose up` refuses to start without NOISYFIT_ADMIN_TOKEN instead of using a known one."""
    with pytest.raises(KeyError, match="NOISYFIT_ADMIN_TOKEN"):
        load_compose("docker-compose.yml", env={})


def test_stateful_services_keep_their_data_in_named_volumes(compose):
    declared = set(compose["volumes"])
    mounts = {
        name: {v.split(":")[0]: v.split(":")[1] for v in service.get("volumes", [])}
        for name, service in compose["services"].items()
    }
    assert mounts["postgres"].get("postgres") == "/var/lib/postgresql/data"
    assert mounts["minio"].get("minio") == "/data"
    assert mounts["worker"].get("data") == compose["services"]["worker"]["environment"]["NOISYFIT_DATA_DIR"]
    for name, volumes in mounts.items():
        for source in volumes:
            assert source.startswith((".", "/")) or source in declared, f"{name}: volume {source} is not declared"


def test_the_worker_healthcheck_pings_the_node_the_image_starts():
    compose = load_compose("docker-compose.yml")
    command = dict(dockerfile_instructions("Dockerfile.worker"))["CMD"]
    node = json.loads(command)[json.loads(command).index("-n") + 1]
    assert node.endswith("@%h")
    ping = compose["services"]["worker"]["healthcheck"]["test"][1]
    assert re.search(rf"-d {re.escape(node.removesuffix('%h'))}\$HOSTNAME\b", ping), ping


def test_the_api_healthcheck_asks_readiness_on_the_port_the_image_serves():
    compose = load_compose("docker-compose.yml")
    command = json.loads(dict(dockerfile_instructions("Dockerfile.api"))["CMD"])
    port = command[command.index("--port") + 1]
    assert f"127.0.0.1:{port}/readyz" in " ".join(compose["services"]["api"]["healthcheck"]["test"])
    assert compose["services"]["api"]["ports"][0].endswith(f":{port}")
