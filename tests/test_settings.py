"""CXSTREAM_* environment settings."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest

from stream.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no CXSTREAM_* variables (CI may set some)."""
    for name in list(os.environ):
        if name.startswith("CXSTREAM_"):
            monkeypatch.delenv(name)


def test_defaults_are_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.embedded_kafka and s.embedded_clickhouse
    assert s.data_dir == Path(".cxstream")
    assert s.topology is None
    assert (s.web_host, s.web_port, s.log_level) == ("127.0.0.1", 6066, "info")
    assert s.clickhouse_dsn == f"chdb://{tmp_path.absolute()}/.cxstream/clickhouse"


def test_env_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "CXSTREAM_KAFKA_BOOTSTRAP": "kafka-0:9092,kafka-1:9092",
        "CXSTREAM_CLICKHOUSE_URL": "http://cx:secret@ch:8123/",
        "CXSTREAM_DATA_DIR": "/var/lib/cxstream",
        "CXSTREAM_TOPOLOGY": "/etc/cxstream/topology.yaml",
        "CXSTREAM_WEB_PORT": "8080",
        "CXSTREAM_WEB_HOST": "0.0.0.0",
        "CXSTREAM_LOG_LEVEL": "DEBUG",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert not s.embedded_kafka and not s.embedded_clickhouse
    assert s.kafka_bootstrap == "kafka-0:9092,kafka-1:9092"
    assert s.clickhouse_dsn == "http://cx:secret@ch:8123/"
    assert s.data_dir == Path("/var/lib/cxstream")
    assert s.topology == Path("/etc/cxstream/topology.yaml")
    assert (s.web_host, s.web_port, s.log_level) == ("0.0.0.0", 8080, "debug")
    assert "secret" not in repr(s)  # the URL's password stays out of logs


def test_empty_env_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSTREAM_KAFKA_BOOTSTRAP", "")
    monkeypatch.setenv("CXSTREAM_CLICKHOUSE_URL", " ")
    monkeypatch.setenv("CXSTREAM_TOPOLOGY", "")
    s = Settings()
    assert s.embedded_kafka and s.embedded_clickhouse and s.topology is None


def test_embedded_dsn_is_absolute(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "state")
    assert s.clickhouse_dsn == f"chdb://{tmp_path}/state/clickhouse"


@pytest.mark.parametrize(
    ("name", "value"),
    [("CXSTREAM_WEB_PORT", "http"), ("CXSTREAM_WEB_PORT", "70000"), ("CXSTREAM_LOG_LEVEL", "loud")],
)
def test_invalid_env_fails(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_every_field_is_documented() -> None:
    # The README documents the variables from these descriptions.
    assert all(f.description for f in Settings.model_fields.values())
