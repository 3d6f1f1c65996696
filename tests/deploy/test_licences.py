"""cleanlab (AGPL) is for the benchmark alone: the `bench` extra, installed by no image and no
script (setup, tests, CI), imported by nothing the service ships (api/, worker/, shared/, client/)."""

import ast
import re
import tomllib

from tests.deploy.conftest import ROOT, dockerfile_instructions

SHIPPED = ("api", "worker", "shared", "client")
BENCH_ONLY = "cleanlab"


def imported_modules(source: str) -> set[str]:
    """The top-level names of every module a Python source imports, wherever the import stands
    (importlib.import_module and __import__ of a literal name included)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")):
            names.add(node.args[0].value)
    return {name.split(".")[0] for name in names}


def test_the_import_reader_finds_every_way_to_import_a_module():
    source = ("import os.path\nfrom cleanlab.filter import x\ndef f():\n    import numpy as np\n"
              "importlib.import_module('scipy.stats')\n__import__('tqdm')\nfrom . import sibling\n")
    assert imported_modules(source) == {"os", "cleanlab", "numpy", "scipy", "tqdm"}


def test_no_shipped_module_imports_cleanlab():
    files = [path for folder in SHIPPED for path in (ROOT / folder).rglob("*.py")]
    assert len(files) > 50, "the shipped packages' sources were not found"
    importing = [str(path.relative_to(ROOT)) for path in files
                 if BENCH_ONLY in imported_modules(path.read_text(encoding="utf-8"))]
    assert not importing, f"{importing} import {BENCH_ONLY} (AGPL): keep it in bench/"


def test_cleanlab_is_the_bench_extra_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    holding = {name for name, requirements in [("dependencies", project["dependencies"]), *extras.items()]
               if any(re.match(rf"{BENCH_ONLY}\b", r, re.IGNORECASE) for r in requirements)}
    assert holding == {"bench"}


def test_no_image_and_no_script_installs_the_bench_extra():
    commands = [args for name in ("Dockerfile.api", "Dockerfile.worker")
                for instruction, args in dockerfile_instructions(name) if instruction == "RUN"]
    scripts = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]
    assert ROOT / "scripts" / "setup.sh" in scripts
    commands += [path.read_text() for path in scripts]
    assert any("pip install" in command for command in commands)
    for command in commands:
        extras = re.findall(r"\.\[([^\]]*)\]", command)
        assert not any("bench" in group.split(",") for group in extras), command
        assert BENCH_ONLY not in command.lower(), command
