"""Settings from the environment (prefix ``BRANCHNET_``); command-line flags override them.

``BRANCHNET_AMQP_URL_FILE`` names a file holding the node's AMQP URL (the credentials
``branchnet broker provision`` wrote for it, ``keys/broker/<user>.url``); it takes the place of
``BRANCHNET_AMQP_URL``, and an ``--amqp-url`` flag still wins over both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError

PinMode = Literal["crypto", "host"]
PinMethod = Literal["ibm3624", "visa_pvv"]
DrMode = Literal["sync", "async"]


class Settings(BaseSettings):
    """What every node may be configured with.

    ``amqp_url`` unset means the embedded bus (``simulate`` only; separate nodes need a broker).
    """

    model_config = SettingsConfigDict(env_prefix="BRANCHNET_", extra="ignore")

    amqp_url: SecretStr | None = None
    amqp_url_file: Path | None = None
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
    settings = Settings(**given)  # type: ignore[arg-type]
    if settings.amqp_url_file is not None and "amqp_url" not in given:
        settings = settings.model_copy(update={"amqp_url": _read_url(settings.amqp_url_file)})
    return settings


def _read_url(path: Path) -> SecretStr:
    """The AMQP URL in ``path`` (never shown: it holds a password).

    Raises:
        ConfigError: the file is missing, unreadable or empty.
    """
    try:
        url = path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"cannot read the AMQP URL file {path}: {type(error).__name__}") from None
    if not url:
        raise ConfigError(f"the AMQP URL file {path} is empty")
    return SecretStr(url)
