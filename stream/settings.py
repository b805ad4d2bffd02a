"""Connection and process settings, from ``CXSTREAM_*`` environment variables.

What the streams *are* lives in ``topology.yaml`` (:mod:`stream.topology`);
*where* they run lives here. Leaving ``CXSTREAM_KAFKA_BOOTSTRAP`` and
``CXSTREAM_CLICKHOUSE_URL`` unset runs everything embedded (a local broker and
chDB under ``CXSTREAM_DATA_DIR``), so a laptop needs no configuration.

>>> s = Settings(kafka_bootstrap=None, clickhouse_url=None, data_dir="/var/lib/cxstream")
>>> s.embedded_kafka, s.embedded_clickhouse, s.clickhouse_dsn
(True, True, 'chdb:///var/lib/cxstream/clickhouse')
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Runtime settings; each field ``x`` is read from ``CXSTREAM_X``."""

    model_config = SettingsConfigDict(env_prefix="CXSTREAM_", frozen=True)

    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers, e.g. `kafka-0:9092,kafka-1:9092`. "
        "Unset: start the embedded broker.",
    )
    clickhouse_url: str | None = Field(
        default=None,
        repr=False,  # usually carries a password; keep it out of logged reprs
        description="ClickHouse HTTP URL, e.g. `http://user:pass@host:8123/`. "
        "Unset: embedded chDB in `<data_dir>/clickhouse`.",
    )
    data_dir: Path = Field(
        default=Path(".cxstream"),
        description="Directory for local state: embedded broker and chDB data.",
    )
    topology: Path | None = Field(
        default=None,
        description="Path of `topology.yaml`. Unset: `./topology.yaml`, "
        "else the one shipped with the package.",
    )
    alertmanager_url: str | None = Field(
        default=None,
        description="Prometheus Alertmanager base URL, e.g. `http://alertmanager:9093`; alerts are posted to its v2 API. "
        "Unset: no Alertmanager delivery.",
    )
    alert_webhook_url: str | None = Field(
        default=None, description="URL that receives every alert status change as JSON (POST). Unset: no webhook."
    )
    web_port: int = Field(default=6066, ge=1, le=65535, description="Port of the web/metrics server.")
    web_host: str = Field(default="127.0.0.1", description="Interface the web server binds to.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Log level: critical, error, warning, info or debug."
    )

    @field_validator("kafka_bootstrap", "clickhouse_url", "topology", "alertmanager_url", "alert_webhook_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Deployment templates often render unset values as "": treat as unset.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def embedded_kafka(self) -> bool:
        """True when no external Kafka is configured."""
        return self.kafka_bootstrap is None

    @property
    def embedded_clickhouse(self) -> bool:
        """True when no external ClickHouse is configured."""
        return self.clickhouse_url is None

    @property
    def clickhouse_dsn(self) -> str:
        """``clickhouse_url``, or ``chdb:///<abs data_dir>/clickhouse`` when embedded."""
        if self.clickhouse_url is not None:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir.expanduser().absolute() / 'clickhouse').as_posix()}"
