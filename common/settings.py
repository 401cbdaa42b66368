"""Settings from the environment (prefix ``BRANCHNET_``); command-line flags override them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PinMode = Literal["crypto", "host"]
PinMethod = Literal["ibm3624", "visa_pvv"]
DrMode = Literal["sync", "async"]


class Settings(BaseSettings):
    """What every node may be configured with.

    ``amqp_url`` unset means the embedded bus (``simulate`` only; separate nodes need a broker).
    """

    model_config = SettingsConfigDict(env_prefix="BRANCHNET_", extra="ignore")

    amqp_url: SecretStr | None = None
    mqtt_url: str | None = None
    data_dir: Path | None = None
    branches: int = Field(default=4, ge=1, le=9999)
    terminals: int = Field(default=4, ge=1, le=99)
    pin_mode: PinMode = "crypto"
    pin_method: PinMethod = "ibm3624"
    dr_mode: DrMode = "sync"
    log_level: str = "warning"
    log_json: bool = True
    request_timeout_s: float = Field(default=10.0, gt=0)
    crypto_timeout_s: float = Field(default=5.0, gt=0)
    metrics_port: int | None = None


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with ``overrides`` (flags) on top; None means unset."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**given)  # type: ignore[arg-type]
