"""Configuration: TOML < environment < flags, validation naming the bad key, check-config masking secrets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import gateway.cli  # noqa: F401  (registers every sub-command)
from gateway.cli.common import cli
from gateway.config import ConfigError, load_settings, startup_warnings


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


AUTH_ENV = "BOUNCEGW_LISTENER__AUTH_USERS"
TLS = {"BOUNCEGW_LISTENER__TLS_CERT": "/etc/tls.pem", "BOUNCEGW_LISTENER__TLS_KEY": "/etc/tls.key"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("exchange=s3cret", {"exchange": "s3cret"}),
        ("exchange=pa=ss", {"exchange": "pa=ss"}),  # the password is everything after the first "="
        ('{"exchange": "pa,ss=word", "postfix": "x y"}', {"exchange": "pa,ss=word", "postfix": "x y"}),
    ],
)
def test_auth_users_from_the_environment(raw: str, expected: dict[str, str]) -> None:
    settings = load_settings(None, environ={AUTH_ENV: raw, **TLS})
    users = {name: secret.get_secret_value() for name, secret in settings.listener.auth_users.items()}
    assert users == expected


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("exchange=Zq7,ss", "comma is ambiguous"),  # was a traceback
        ("exchange=Zq7,ss=word", "comma is ambiguous"),  # was a user "ss" and a cut password
        ("exchange", "expected user=password"),
        ("=Zq7", "expected user=password"),
        ('{"exchange": 1}', "JSON object of strings"),
        ('{"exchange": "Zq7"', "not a valid JSON object"),
        ('{"ex change": "Zq7"}', "without spaces"),
        ('{"exchange": ""}', "empty password"),
    ],
)
def test_ambiguous_auth_users_are_refused_in_one_line(raw: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={AUTH_ENV: raw, **TLS})
    message = str(info.value)
    assert needle in message and "auth_users" in message and AUTH_ENV in message
    assert "Zq7" not in message  # the password is never echoed
    assert len([line for line in message.splitlines() if line.strip()]) <= 2


OPEN = {"BOUNCEGW_LISTENER__LISTEN": "0.0.0.0:10025", "BOUNCEGW_LISTENER__ALLOWED_NETWORKS": "0.0.0.0/0"}


@pytest.mark.parametrize(
    "env",
    [
        OPEN,
        {"BOUNCEGW_LISTENER__LISTEN": "[::]:10025", "BOUNCEGW_LISTENER__ALLOWED_NETWORKS": "10.0.0.0/8,::/0"},
        {"BOUNCEGW_LISTENER__LISTEN": "mx.example:25", "BOUNCEGW_LISTENER__ALLOWED_NETWORKS": "0.0.0.0/1"},
    ],
)
def test_an_open_relay_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ=env)
    message = str(info.value)
    assert "open relay" in message and "allow_open_relay = true" in message
    assert "environment variable BOUNCEGW_LISTENER__ALLOWED_NETWORKS" in message


@pytest.mark.parametrize(
    "env",
    [
        {**OPEN, "BOUNCEGW_LISTENER__LISTEN": "127.0.0.1:10025"},  # loopback only
        {**OPEN, "BOUNCEGW_LISTENER__ALLOWED_NETWORKS": "10.0.0.0/8,172.16.0.0/12,fd00::/8"},
        {**OPEN, "BOUNCEGW_LISTENER__ALLOWED_NETWORKS": "52.100.0.0/14,2a01:111:f400::/48"},
        {**OPEN, **TLS, "BOUNCEGW_LISTENER__REQUIRE_AUTH": "true", AUTH_ENV: "exchange=s3cret"},
    ],
)
def test_networks_that_are_no_open_relay_start_quietly(env: dict[str, str]) -> None:
    settings = load_settings(None, environ=env)
    assert startup_warnings(settings) == []


def test_explicit_overrides_start_with_a_warning() -> None:
    settings = load_settings(
        None,
        environ={
            **OPEN,
            "BOUNCEGW_LISTENER__ALLOW_OPEN_RELAY": "true",
            "BOUNCEGW_ADMIN__HTTP": "0.0.0.0:8025",
        },
    )
    relay, admin = startup_warnings(settings)
    assert "open relay" in relay and "0.0.0.0/0" in relay
    assert "admin.http '0.0.0.0:8025'" in admin and "admin.api_token" in admin
    with_token = load_settings(
        None, environ={"BOUNCEGW_ADMIN__HTTP": "0.0.0.0:8025", "BOUNCEGW_ADMIN__API_TOKEN": "t0k"}
    )
    assert startup_warnings(with_token) == []
