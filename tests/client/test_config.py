"""The client finds the API and its key: flags, then the environment, then the config file."""

from pathlib import Path

import pytest

from client.config import DEFAULT_URL, ConfigError, config_path, load_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write(tmp_path / "config.toml", 'api_url = "http://file:1"\napi_key = "file-key"\n')


def test_flags_win_over_the_environment_and_the_file(config_file: Path):
    env = {"NOISYFIT_CONFIG": str(config_file), "NOISYFIT_API_URL": "http://env:2", "NOISYFIT_API_KEY": "env-key"}
    config = load_config("http://flag:3/", "flag-key", env=env)
    assert (config.api_url, config.api_key) == ("http://flag:3", "flag-key")


def test_the_environment_wins_over_the_file(config_file: Path):
    env = {"NOISYFIT_CONFIG": str(config_file), "NOISYFIT_API_KEY": "env-key"}
    config = load_config(env=env)
    assert (config.api_url, config.api_key) == ("http://file:1", "env-key"), "each value is looked up on its own"
    assert "NOISYFIT_API_KEY" in config.source


def test_the_file_is_read_when_nothing_else_is_given(config_file: Path):
    config = load_config(env={"NOISYFIT_CONFIG": str(config_file)})
    assert (config.api_url, config.api_key, config.source) == ("http://file:1", "file-key", str(config_file))


def test_without_any_configuration_the_default_url_and_no_key(tmp_path: Path):
    config = load_config(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert (config.api_url, config.api_key) == (DEFAULT_URL, None)


def test_the_default_file_lives_under_the_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write(tmp_path / "xdg" / "noisyfit" / "config.toml", 'api_key = "xdg-key"\n')
    assert load_config(env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}).api_key == "xdg-key"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_path({}) == tmp_path / "home" / ".config" / "noisyfit" / "config.toml"


@pytest.mark.parametrize(
    "text, words",
    [
        ("api_key = ", "not valid TOML"),
        ('api_key = "k"\nurl = "http://x"\n', "unknown key(s) url"),
        ("api_key = 3\n", "api_key must be a string"),
    ],
)
def test_a_broken_file_says_what_to_change(tmp_path: Path, text: str, words: str):
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as error:
        load_config(env={"NOISYFIT_CONFIG": str(path)})
    assert str(path) in str(error.value)


def test_a_named_file_must_exist_but_the_default_one_need_not(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env={"NOISYFIT_CONFIG": str(tmp_path / "missing.toml")})
    assert load_config(env={"XDG_CONFIG_HOME": str(tmp_path / "nothing")}).api_key is None


def test_a_url_without_a_scheme_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="http:// or https://"):
        load_config(env={"NOISYFIT_API_URL": "localhost:8000", "XDG_CONFIG_HOME": str(tmp_path)})
