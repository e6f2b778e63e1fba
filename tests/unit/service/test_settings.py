"""The settings table: precedence, parsing, validation, what the stack hands its replicas, and
the table in docs/configuration.md."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from rerank.service.settings import Settings, SettingsError, build_parser, markdown_table, parse, resolve
from tests.support import REPO


def test_defaults_come_from_the_declarations():
    assert resolve("serve", {}, environ={}) == Settings()
    assert Settings().grpc_host == "127.0.0.1"  # behind Envoy the service stays on loopback


def test_environment_overrides_defaults_and_flags_override_the_environment():
    env = {"RERANK_GRPC_PORT": "6000", "RERANK_MAX_DOCUMENTS": "50"}
    assert resolve("serve", {}, environ=env).grpc_port == 6000
    settings = resolve("serve", {"grpc_port": "7000"}, environ=env)
    assert (settings.grpc_port, settings.max_documents) == (7000, 50)


def test_an_empty_variable_is_unset():
    assert resolve("serve", {}, environ={"RERANK_VARIANT": "", "RERANK_GRPC_PORT": " "}) == Settings()


@pytest.mark.parametrize(("text", "value"), [("1", True), ("true", True), ("Yes", True), ("off", False), ("0", False)])
def test_booleans(text, value):
    assert resolve("serve", {}, environ={"RERANK_INSECURE_NO_AUTH": text}).insecure_no_auth is value


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RERANK_INSECURE_NO_AUTH": "maybe"}, "RERANK_INSECURE_NO_AUTH"),
        ({"RERANK_GRPC_PORT": "http"}, "RERANK_GRPC_PORT"),
        ({"RERANK_DEVICE": "tpu"}, "--device must be one of cpu, cuda"),
        ({"RERANK_MAX_BATCH_PAIRS": "0"}, "--max-batch-pairs must be at least 1"),
        ({"RERANK_MAX_REQUEST_BYTES": "10"}, "--max-request-bytes must be at least 1024"),
    ],
)
def test_bad_values_name_the_setting(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        resolve("serve", {}, environ=env)


def test_command_line_errors_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("serve", ["--grpc-port", "x"], prog="rerank-serve", description="")
    assert exit_info.value.code == 2
    assert "RERANK_GRPC_PORT" in capsys.readouterr().err


def test_keys_come_from_the_environment_only():
    flags = {a.dest for a in build_parser("serve", "x", "")._actions}
    assert "api_keys" not in flags  # a flag would show the keys in `ps`
    settings = resolve("serve", {"api_keys": "from-a-flag"}, environ={"RERANK_API_KEYS": "a, b,,"})
    assert settings.api_keys == ("a", "b")


def test_each_command_takes_only_its_settings():
    serve = {a.dest for a in build_parser("serve", "x", "")._actions}
    stack = {a.dest for a in build_parser("stack", "x", "")._actions}
    gateway = {a.dest for a in build_parser("gateway", "x", "")._actions}
    assert "replicas" in stack and "replicas" not in serve and "replicas" not in gateway
    assert "upstreams" in gateway and "upstreams" not in stack
    assert "models_dir" in serve and "models_dir" not in gateway


def test_replicas_get_the_stacks_service_settings_through_the_environment():
    stack = Settings(models_dir=Path("/m"), max_batch_pairs=7, api_keys=("k",), replicas=3, rest_port=81)
    env = stack.to_env("serve")
    assert "RERANK_REPLICAS" not in env and "RERANK_REST_PORT" not in env
    replica = resolve("serve", {}, environ=env)
    served = {f.name for f in dataclasses.fields(Settings) if "serve" in f.metadata["roles"]}
    assert {n: getattr(replica, n) for n in served} == {n: getattr(stack, n) for n in served}


def test_documented_table_is_the_declarations():
    page = (REPO / "docs" / "configuration.md").read_text()
    section = page.split("<!-- settings-table:start -->\n", 1)[1].split("<!-- settings-table:end -->", 1)[0]
    assert section.strip() == markdown_table().strip(), "regenerate it: scripts/settings-table"


def test_each_type_is_parsed_from_text():
    env = {
        "RERANK_MODELS_DIR": "/srv/models",
        "RERANK_ROUTE_TIMEOUT": "2.5",
        "RERANK_THREADS": "3",
        "RERANK_API_KEYS_FILE": "/etc/keys",
        "RERANK_LOG_LEVEL": "debug",
    }
    settings = resolve("stack", {}, environ=env)
    assert settings.models_dir == Path("/srv/models") and isinstance(settings.models_dir, Path)
    assert settings.route_timeout == 2.5 and isinstance(settings.route_timeout, float)
    assert settings.threads == 3 and settings.api_keys_file == Path("/etc/keys") and settings.log_level == "debug"
    assert resolve("serve", {}, environ={}).threads is None  # an optional setting left unset


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RERANK_ROUTE_TIMEOUT": "0.5"}, "--route-timeout must be at least 1"),
        ({"RERANK_HEALTH_CHECK_INTERVAL": "0.05"}, "--health-check-interval must be at least 0.1"),
        ({"RERANK_THREADS": "0"}, "--threads must be at least 1"),
        ({"RERANK_LOG_LEVEL": "verbose"}, "--log-level must be one of debug, info, warning, error"),
        ({"RERANK_GRPC_PORT": "-1"}, "--grpc-port must be at least 0"),
    ],
)
def test_limits_of_each_kind(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        resolve("stack", {}, environ=env)


def test_a_flag_switches_a_boolean_on_and_the_command_keeps_its_own_arguments():
    def extra(parser):
        parser.add_argument("--version-check", action="store_true")

    settings, namespace = parse(
        "serve",
        ["--insecure-no-auth", "--grpc-port", "6001", "--version-check"],
        prog="p",
        description="",
        add_arguments=extra,
    )
    assert settings.insecure_no_auth is True and settings.grpc_port == 6001 and namespace.version_check is True


def test_typed_overrides_are_checked_too():
    assert resolve("serve", {}, environ={}, max_batch_pairs=3).max_batch_pairs == 3
    with pytest.raises(SettingsError, match="--max-batch-pairs must be at least 1"):
        resolve("serve", {}, environ={}, max_batch_pairs=0)


def test_a_settings_flag_of_another_command_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse("serve", ["--replicas", "2"], prog="rerank-serve", description="")
    assert "--replicas" in capsys.readouterr().err
