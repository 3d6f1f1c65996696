"""Dockerfile.api, Dockerfile.worker and .dockerignore against the design's promises."""

import json
import tomllib

from tests.deploy.conftest import ROOT, dockerfile_instructions


def runs(name: str) -> list[str]:
    return [args for instruction, args in dockerfile_instructions(name) if instruction == "RUN"]


def test_the_api_image_never_installs_torch():
    """The API installs the base package only; torch and the [worker] extra stay out of it."""
    for command in runs("Dockerfile.api"):
        assert "torch" not in command and "[worker]" not in command, command
    assert any("pip install ." in command for command in runs("Dockerfile.api"))
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in base if d.lower().startswith(("torch", "torchvision"))]


def test_the_api_image_holds_no_training_code():
    copied = [args.split()[0] for instruction, args in dockerfile_instructions("Dockerfile.api") if instruction == "COPY"]
    assert "worker" not in copied


def test_the_worker_image_installs_the_worker_extra():
    assert any('pip install ".[worker]"' in command for command in runs("Dockerfile.worker"))


def test_images_start_the_design_entry_points():
    api = json.loads(dict(dockerfile_instructions("Dockerfile.api"))["CMD"])
    worker = json.loads(dict(dockerfile_instructions("Dockerfile.worker"))["CMD"])
    assert api[:2] == ["uvicorn", "api.main:app"]
    assert worker[:6] == ["celery", "-A", "worker.app", "worker", "-Q", "train"]
    assert worker[worker.index("-c") + 1] == "1", "one job at a time per GPU"


def test_images_run_as_an_unprivileged_user():
    for name in ("Dockerfile.api", "Dockerfile.worker"):
        users = [args for instruction, args in dockerfile_instructions(name) if instruction == "USER"]
        assert users and users[-1] not in ("root", "0"), name


def test_build_context_leaves_out_local_state():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var"} <= ignored
