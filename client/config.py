"""Where the client finds the API and its key.

Precedence, first wins: explicit values (command-line flags), the environment
(NOISYFIT_API_URL, NOISYFIT_API_KEY), the config file, the default URL. The config file is
TOML at $NOISYFIT_CONFIG, else $XDG_CONFIG_HOME/noisyfit/config.toml, else
~/.config/noisyfit/config.toml:

    api_url = "https://noisyfit.example.org"
    api_key = "nf_..."
"""

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://localhost:8000"
KEYS = ("api_url", "api_key")


class ConfigError(Exception):
    """The configuration cannot be used as it is; the message says what to change."""


@dataclass(frozen=True)
class Config:
    api_url: str
    api_key: str | None
    source: str  # where the key came from, for error messages


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("NOISYFIT_CONFIG"):
        return Path(env["NOISYFIT_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "noisyfit" / "config.toml"


def read_config_file(path: Path, required: bool) -> dict[str, str]:
    if not path.is_file():
        if required:
            raise ConfigError(f"config file {path} (NOISYFIT_CONFIG) does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}; it takes {', '.join(KEYS)}")
    for key, value in data.items():
        if not isinstance(value, str):
            raise ConfigError(f"config file {path}: {key} must be a string")
    return data


def load_config(
    api_url: str | None = None, api_key: str | None = None, env: Mapping[str, str] | None = None
) -> Config:
    env = os.environ if env is None else env
    path = config_path(env)
    file = read_config_file(path, required=bool(env.get("NOISYFIT_CONFIG")))
    from_env = {"api_url": env.get("NOISYFIT_API_URL"), "api_key": env.get("NOISYFIT_API_KEY")}
    sources = [
        ("--api-url/--api-key", {"api_url": api_url, "api_key": api_key}),
        ("NOISYFIT_API_URL/NOISYFIT_API_KEY", from_env),
        (str(path), file),
    ]
    url = next((values["api_url"] for _, values in sources if values.get("api_url")), DEFAULT_URL)
    key, source = next(((values["api_key"], name) for name, values in sources if values.get("api_key")), (None, ""))
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"API URL {url!r} must start with http:// or https://")
    return Config(url.rstrip("/"), key, source)
