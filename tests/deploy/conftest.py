"""Readers for the deployment files: the Compose files as Compose reads them, the Dockerfiles."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# What `docker compose` would find in a shell that set only the required variables.
ENVIRONMENT = {"NOISYFIT_ADMIN_TOKEN": "an-admin-token"}

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$."""

    def value(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"${{{name}}} is required: {arg}")
        return arg if op else ""

    return _VARIABLE.sub(value, text)


class ComposeLoader(yaml.SafeLoader):
    """Reads Compose's merge tags: `!reset` drops the base value, `!override` replaces it whole."""


def _tagged(tag: str):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            value: Any = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return (tag, value)

    return construct


ComposeLoader.add_constructor("!reset", _tagged("reset"))
ComposeLoader.add_constructor("!override", _tagged("override"))


def load_compose(*names: str, env: dict[str, str] = ENVIRONMENT) -> dict[str, Any]:
    """The Compose files `names`, interpolated and merged left to right as `-f a -f b` does."""
    merged: dict[str, Any] = {}
    for name in names:
        merged = merge(merged, yaml.load(interpolate((ROOT / name).read_text(), env), ComposeLoader))
    return merged


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file into a base (mappings by key, tags honoured)."""
    if isinstance(override, tuple):
        tag, value = override
        return None if tag == "reset" else value
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            merged = merge(base.get(key), value)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        return out
    if isinstance(base, list) and isinstance(override, list):
        return base + [item for item in override if item not in base]
    return override


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    lines = (line.strip() for line in text.splitlines())
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_compose("docker-compose.yml")


@pytest.fixture(scope="session")
def compose_cpu() -> dict[str, Any]:
    return load_compose("docker-compose.yml", "docker-compose.cpu.yml")
