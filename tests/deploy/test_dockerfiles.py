"""Dockerfile.api, Dockerfile.worker and .dockerignore against the design's promises."""

import fnmatch
import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile

import httpx

from tests.conftest import free_port, stop, wait_for_port
from tests.deploy.conftest import ROOT, dockerfile_instructions

DOCS_ASSETS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "api" / "static").rglob("*") if p.is_file())
UI_TEMPLATES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "api" / "ui" / "templates").rglob("*")
                      if p.is_file())
MIGRATION_FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "shared" / "migrations").rglob("*")
                         if p.is_file() and "__pycache__" not in p.parts)


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


def api_command() -> list[str]:
    return json.loads(dict(dockerfile_instructions("Dockerfile.api"))["CMD"])


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's patterns drop `path` from the build context: a pattern drops a path
    it or one of its folders matches, `!` takes it back, the last match wins. fnmatch's `*` also
    crosses `/`, so this errs towards "dropped"."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    dropped = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes for p in {pattern, pattern.removeprefix("**/")}):
            dropped = not keep
    return dropped


def test_images_start_the_design_entry_points():
    api = api_command()
    worker = json.loads(dict(dockerfile_instructions("Dockerfile.worker"))["CMD"])
    assert api[:2] == ["uvicorn", "api.main:app"]
    assert worker[:6] == ["celery", "-A", "worker.app", "worker", "-Q", "train"]
    assert "-c" not in worker, "the worker sizes its pool to its slots (worker/packing.py)"


def test_images_run_as_an_unprivileged_user():
    for name in ("Dockerfile.api", "Dockerfile.worker"):
        users = [args for instruction, args in dockerfile_instructions(name) if instruction == "USER"]
        assert users and users[-1] not in ("root", "0"), name


def test_build_context_leaves_out_local_state():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var"} <= ignored


def test_the_api_starts_from_what_its_image_copies_without_torch_or_worker(tmp_path):
    """A copy of just the folders Dockerfile.api copies imports api.main with torch and worker/ unreachable."""
    for name in copied("Dockerfile.api"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
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


def test_the_api_image_bounds_what_a_client_connection_can_hold():
    """h11 caps the request line and headers (httptools buffers any size); a connection limit and a
    keep-alive timeout bound the rest. Slow headers are the known limit (docs/RELIABILITY.md)."""
    command = api_command()
    assert option(command, "--http") == "h11"
    assert 8 * 1024 <= int(option(command, "--h11-max-incomplete-event-size")) <= 64 * 1024
    assert int(option(command, "--limit-concurrency")) > 0
    assert 0 < int(option(command, "--timeout-keep-alive")) <= 60


def test_the_api_image_believes_forwarded_headers_only_from_a_named_proxy():
    """With --forwarded-allow-ips "*", any client reaching the published port could claim another
    address and scheme; uvicorn's default (FORWARDED_ALLOW_IPS, else 127.0.0.1) names the proxy."""
    command = api_command()
    assert "--forwarded-allow-ips" not in command or option(command, "--forwarded-allow-ips") != "*"


def _answer(port: int, head: bytes) -> bytes:
    """The first bytes the server answers to `head`; b"" when it resets the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        try:
            connection.sendall(head)
            return connection.recv(64)
        except ConnectionResetError:
            return b""


def test_the_api_as_its_image_serves_it_refuses_an_endless_request_head(service_env, tmp_path):
    """A request head that passes the limit unfinished is refused (4xx or reset), not buffered on."""
    command = api_command()
    port = free_port()
    command[command.index("--host") + 1], command[command.index("--port") + 1] = "127.0.0.1", str(port)
    with (tmp_path / "uvicorn.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env={**os.environ, **service_env},
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, timeout_s=60)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        limit = int(option(command, "--h11-max-incomplete-event-size"))
        head = b"GET /healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\nX-Pad: "
        assert _answer(port, head + b"a" * (limit // 2) + b"\r\n\r\n").startswith(b"HTTP/1.1 200")
        refused = _answer(port, head + b"a" * (2 * limit))
        assert refused == b"" or refused.startswith(b"HTTP/1.1 4"), refused
    finally:
        stop(process)


def test_the_build_context_and_the_api_image_keep_the_docs_assets():
    """/docs and /redoc serve files from api/static: .dockerignore keeps them, Dockerfile.api copies them."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert dockerignored(".venv/bin/python", patterns) and dockerignored("api/__pycache__/main.pyc", patterns)
    assert DOCS_ASSETS and not [path for path in DOCS_ASSETS + UI_TEMPLATES if dockerignored(path, patterns)]
    assert "api" in copied("Dockerfile.api")


def test_the_wheel_ships_the_docs_assets_and_the_migrations(tmp_path):
    """`pip install .` (as Dockerfile.api runs it, from what it copies) puts api/static, the
    dashboard's templates and shared/migrations (which the API runs on start) into the package."""
    source = tmp_path / "source"
    for name in copied("Dockerfile.api"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    assert "shared/migrations/script.py.mako" in MIGRATION_FILES
    assert any(path.startswith("shared/migrations/versions/0001_") for path in MIGRATION_FILES)
    assert "api/ui/templates/base.html" in UI_TEMPLATES and "api/static/vendor/uplot/LICENSE" in DOCS_ASSETS
    missing = set(DOCS_ASSETS + UI_TEMPLATES + MIGRATION_FILES) - set(zipfile.ZipFile(wheel).namelist())
    assert not missing, f"the wheel lacks {sorted(missing)}: see [tool.setuptools.package-data] in pyproject.toml"
