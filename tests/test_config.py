"""Configuration: TOML < environment < flags, validation naming the bad key, check-config masking secrets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import gateway.cli  # noqa: F401  (registers every sub-command)
from gateway.cli.common import cli
from gateway.config import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bouncegw.toml"
    path.write_text(text)
    return path


def test_layers_toml_then_environment_then_flags(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[listener]\nlisten = "127.0.0.1:2525"\nmax_recipients = 50\n[next_hop]\naddress = "10.0.0.1:25"\n',
    )
    env = {"BOUNCEGW_LISTENER__MAX_RECIPIENTS": "60", "BOUNCEGW_NEXT_HOP__ADDRESS": "mx.test:2526"}
    settings = load_settings(config, environ=env, flags={"next_hop": "maildir:var/out", "listen": None})
    assert settings.listener.listen == "127.0.0.1:2525"  # from the file
    assert settings.listener.max_recipients == 60  # the environment beats the file
    assert settings.next_hop.address == "maildir:var/out"  # a flag beats both
    assert settings.next_hop.maildir == Path("var/out")


def test_environment_lists_and_top_level_keys(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        environ={
            "BOUNCEGW_LISTENER__ALLOWED_NETWORKS": "10.0.0.0/8, 127.0.0.1/32",
            "BOUNCEGW_INSTANCE": "gw-7",
        },
    )
    assert settings.listener.allowed_networks == ["10.0.0.0/8", "127.0.0.1/32"]
    assert settings.instance == "gw-7"


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ('[listener]\nmax_recipients = "many"\n', {}, "listener.max_recipients"),
        ('[listener]\nlisten = "nowhere"\n', {}, "listener.listen"),
        ("[listener]\nlistne = 1\n", {}, "listener.listne: unknown key"),
        ('[next_hop]\ntls = "sometimes"\n', {}, "next_hop.tls"),
        ("", {"BOUNCEGW_NEXT_HOP__PORT": "25"}, "BOUNCEGW_NEXT_HOP__PORT: unknown key next_hop.port"),
        (
            "",
            {"BOUNCEGW_LISTENER__MAX_SESSIONS": "0"},
            "environment variable BOUNCEGW_LISTENER__MAX_SESSIONS",
        ),
        ('[listener]\nallowed_networks = ["10.0.0.0/33"]\n', {}, "listener.allowed_networks"),
        ("[listener]\nrequire_tls = true\n", {}, "require_tls needs tls_cert"),
        ("[listener\n", {}, "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, toml: str, env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, toml), environ=env)
    assert needle in str(info.value)


def test_check_config_prints_effective_toml_with_secrets_masked(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[next_hop]\nusername = "relay"\npassword = "hunter2"\n[admin]\napi_token = "tok-123"\n',
    )
    result = CliRunner().invoke(
        cli, ["check-config", "--config", str(config)], env={"BOUNCEGW_LOG__LEVEL": "debug"}
    )
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "tok-123" not in result.output
    printed = tomllib.loads(result.output)
    assert printed["next_hop"]["password"] == "********"
    assert printed["admin"]["api_token"] == "********"
    assert printed["next_hop"]["username"] == "relay"
    assert printed["log"]["level"] == "DEBUG"


def test_check_config_fails_with_the_key_and_exit_status(tmp_path: Path) -> None:
    config = write(tmp_path, "[listener]\nmax_message_size = 10\n")
    result = CliRunner().invoke(cli, ["check-config", "--config", str(config)])
    assert result.exit_code != 0
    assert "listener.max_message_size" in result.output


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["check-config", "--config", str(tmp_path / "absent.toml")])
    assert result.exit_code != 0
    assert "cannot read configuration file" in result.output
