"""Invalid or missing configuration stops the process at start-up with exit code 2 and a
message naming the variable and what is expected, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_app.auth import ApiKeys
from agent_app.config import ConfigError, Settings, load_settings
from skyfleet.testing.servers import REPO, app_env

NATS = "nats://127.0.0.1:4222/TASKS"


def run(kind: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"agent_app.{kind}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("kind", ["api", "worker"])
def test_process_exits_2_naming_the_variable(kind: str) -> None:
    env = app_env("redis://127.0.0.1:1/0", NATS)
    del env["AGENT_REDIS_URL"]
    env["AGENT_QUEUE_URL"] = "kafka://broker/topic"
    result = run(kind, env)
    assert result.returncode == 2
    assert "AGENT_REDIS_URL: is required but not set" in result.stderr
    assert "AGENT_QUEUE_URL" in result.stderr and "expected sqs://, pubsub:// or nats://" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_without_keys_exits_2() -> None:
    env = app_env("redis://127.0.0.1:1/0", NATS)
    del env["AGENT_API_KEYS"]
    result = run("api", env)
    assert result.returncode == 2
    assert "AGENT_API_KEYS_FILE" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AGENT_REDIS_URL", "http://cache:6379", "expected redis://"),
        ("AGENT_REDIS_URL", "redis://:hunter2@cache:6379", "must not ride in the URL"),
        ("AGENT_PORT", "http", "valid integer"),
        ("AGENT_QUEUE_URL", "nats://h:4222/S?max_deliver=0", "max_deliver must be at least 1"),
        ("AGENT_REDIS_SENTINELS", "a:1,b", "expected host:port"),
        ("AGENT_REDIS_CA_FILE", "/nonexistent/ca.pem", "does not point to a file"),
        ("AGENT_MODEL_BACKEND", "openai", "AGENT_MODEL_BASE_URL: expected an http(s):// base URL"),
        ("AGENT_LOG_LEVEL", "LOUD", "expected one of DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_each_bad_variable_is_named(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    expected: str,
) -> None:
    for key, val in app_env("redis://127.0.0.1:6379/0", NATS).items():
        if key.startswith("AGENT_"):
            monkeypatch.setenv(key, val)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_info:
        load_settings()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert variable in err or "AGENT_MODEL_BASE_URL" in err
    assert expected in err
    assert "hunter2" not in err


def test_api_keys_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text("# rotated 2026-11\nfile-key-0123456789abcdef\n\n")
    monkeypatch.setenv("AGENT_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("AGENT_QUEUE_URL", NATS)
    monkeypatch.setenv("AGENT_API_KEYS_FILE", str(keys_file))
    monkeypatch.setenv("AGENT_API_KEYS", "env-key-0123456789abcdef, other-key-0123456789abcdef")
    keys = ApiKeys.from_settings(Settings())  # type: ignore[call-arg]
    ids = {
        keys.verify(k)
        for k in ("file-key-0123456789abcdef", "env-key-0123456789abcdef", "other-key-0123456789abcdef")
    }
    assert len(ids) == 3
    keys_file.write_text("short\n")
    with pytest.raises(ConfigError, match=r"AGENT_API_KEYS_FILE .* line 1 is shorter"):
        ApiKeys(file=keys_file, inline=None)
    # Keys a YAML tool folded onto one line: refused, not taken as one key no client sends.
    with pytest.raises(ConfigError, match=r"AGENT_API_KEYS: key on line 1 holds whitespace"):
        ApiKeys(file=None, inline="env-key-0123456789abcdef other-key-0123456789abcdef")


@pytest.mark.parametrize("given", ["info", "INFO", "Warning"])
def test_log_level_is_read_in_any_case(given: str) -> None:
    settings = Settings.model_validate(
        {"AGENT_REDIS_URL": "redis://h:6379/0", "AGENT_QUEUE_URL": NATS, "AGENT_LOG_LEVEL": given}
    )
    assert settings.log_level == given.upper()


def test_a_nats_password_never_rides_in_the_queue_url() -> None:
    from agent_app.contract import ContractError, parse_queue_url

    queue = parse_queue_url("nats://worker@nats.agent-app.svc:4222/AGENT_TASKS?tls=true")
    assert getattr(queue, "user", None) == "worker"
    with pytest.raises(ContractError, match="AGENT_QUEUE_PASSWORD"):
        parse_queue_url("nats://worker:hunter2@nats.agent-app.svc:4222/AGENT_TASKS")


def test_instances_without_a_given_name_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloud Run sets no AGENT_INSTANCE, and its instances share the host name "localhost" and,
    running one image, usually the pid: each still gets an instance name of its own."""
    monkeypatch.setenv("AGENT_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("AGENT_QUEUE_URL", NATS)
    monkeypatch.delenv("AGENT_INSTANCE", raising=False)
    monkeypatch.setattr("socket.gethostname", lambda: "localhost")
    names = {Settings().instance for _ in range(5)}  # type: ignore[call-arg]
    assert len(names) == 5 and all(n.startswith(f"localhost-{os.getpid()}-") for n in names)
