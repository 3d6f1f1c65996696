"""Dockerfile.api, Dockerfile.worker and .dockerignore against the design's promises."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.deploy.conftest import ROOT, dockerfile_instructions


def runs(name: str) -> list[str]:
    return [args for instruction, args in dockerfile_instructions(name) if instruction == "RUN"]


def copied(name: str) -> list[str]:
    """The sources of the Dockerfile's COPY instructions."""
    return [args.split()[0] for instruction, args in dockerfile_instructions(name) if instruction == "COPY"]


def test_the_api_image_never_installs_torch():
    """The API installs the base package only; torch and the [worker] extra stay out of it."""
    for command in runs("Dockerfile.api"):
        assert "torch" not in command and "[worker]" not in command, command
    assert any("pip install ." in command for command in runs("Dockerfile.api"))
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in base if d.lower().startswith(("torch", "torchvision"))]


def test_the_api_image_holds_no_training_code():
    assert "worker" not in copied("Dockerfile.api")


def test_the_worker_image_installs_the_worker_extra():
    assert any('pip install ".[worker]"' in command for command in runs("Dockerfile.worker"))


def copy_api_image_sources(folder: Path) -> None:
    """What Dockerfile.api copies, copied into `folder`."""
    for name in copied("Dockerfile.api"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, folder / name)


def test_the_api_image_installs_every_migration(tmp_path):
    """`pip install .` of what Dockerfile.api copies ships shared/migrations whole, so the API upgrades on start."""
    copy_api_image_sources(tmp_path)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", "dist", "."],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("noisyfit-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    migrations = ROOT / "shared" / "migrations"
    wanted = {f"shared/migrations/{path.relative_to(migrations).as_posix()}" for path in migrations.rglob("*")
              if path.is_file() and "__pycache__" not in path.parts}
    assert {"shared/migrations/env.py", "shared/migrations/script.py.mako"} <= wanted
    assert any(name.startswith("shared/migrations/versions/0001_") for name in wanted)
    assert wanted <= shipped, sorted(wanted - shipped)


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


def test_the_api_starts_from_what_its_image_copies_without_torch_or_worker(tmp_path):
    """A copy of just the folders Dockerfile.api copies imports api.main with torch and worker/ unreachable."""
    copy_api_image_sources(tmp_path)
    blocker = (  # the project's packages only from the copy (not the checkout), torch never
        "import os, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        top = name.split('.')[0]\n"
        "        ours = top in ('api', 'shared', 'worker', 'client')\n"
        "        if top in ('torch', 'torchvision') or ours and not os.path.isdir(top):\n"
        "            raise ImportError(f'{name} is not in the API image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.path.insert(0, '.')\n"
        "import api.main\n"
        "assert api.main.app.title == 'noisyfit'\n"
    )
    done = subprocess.run([sys.executable, "-c", blocker], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("NOISYFIT_")})
    assert done.returncode == 0, done.stderr
