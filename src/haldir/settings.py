"""Settings, read once at start-up from `HALDIR_*` environment variables and passed down."""

from __future__ import annotations

import os
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from haldir.core.commands import program_entry
from haldir.core.ids import TENANT_ID
from haldir.core.scopes import SCOPE_NAME

LogLevel = Literal["debug", "info", "warning", "error"]


def comma_list(value: object) -> object:
    """A comma-separated environment value as a tuple of its non-empty, stripped parts."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Server and operator settings. Each field is documented in the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="HALDIR_", extra="ignore", frozen=True)

    data_dir: Path = Field(default=Path(".haldir"), description="Directory for the embedded store and keys.")
    database_url: str | None = Field(
        default=None,
        description="Store URL. Unset: SQLite at <data_dir>/haldir.db. `postgresql://…` selects PostgreSQL.",
    )
    host: str = Field(default="127.0.0.1", description="Address the API server binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the API server listens on.")
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/-]*)?$",
        description="The URL clients reach this server at (`https://haldir.example.com`), written into the "
        "discovery documents; unset: each request's own scheme and Host.",
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="Worker processes `haldir serve` runs; default one per CPU.",
    )
    log_level: LogLevel = Field(default="info", description="Minimum log level.")
    log_json: bool = Field(default=True, description="Log JSON lines; false prints human-readable lines.")
    session_max_ttl: int = Field(
        default=30 * 86400, ge=1, description="Longest session TTL in seconds a caller may ask for."
    )
    strict_scopes: bool = Field(
        default=False,
        description="Accept only the built-in session scope names and `custom_scopes` (a typo guard); "
        "off: any well-formed name.",
    )
    custom_scopes: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="With `strict_scopes`: session scope names allowed beyond the built-in ones, "
        "comma-separated (`stripe,github`).",
    )
    log_origin: str = Field(
        default="haldir.local",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}$",
        description="Name of this deployment's logs; a tenant's checkpoint origin is `<log_origin>/<tenant>`",
    )
    log_signing_key: SecretStr | None = Field(
        default=None,
        description="The log's Ed25519 signing key (`PRIVATE+KEY+…`); unset: generated into the data dir.",
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description="The Vault's master key: base64 of 32 bytes; several, comma-separated and newest first, "
        "while rotating. Unset: generated into the data dir.",
    )
    approval_pending_seconds: int = Field(
        default=900,
        ge=10,
        le=7 * 86400,
        description="How long an approval request waits for a decision before it expires (and is denied).",
    )
    approval_use_seconds: int = Field(
        default=3600,
        ge=10,
        le=7 * 86400,
        description="How long an approved request stays usable: made again within it, it runs once.",
    )
    approval_wait_seconds: float = Field(
        default=0,
        ge=0,
        le=300,
        description="How long the gateway holds a call that needs approval open, waiting for the decision, "
        "before it answers `approval_required`. 0: answer at once.",
    )
    metrics: bool = Field(
        default=False,
        description="Serve Prometheus metrics at `GET /metrics` (unauthenticated, deployment-wide figures, "
        "no tenant data): expose it only where your Prometheus can reach it.",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200, description="PostgreSQL connections per process.")
    outbound_allow: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(),
        description="Private, loopback or link-local networks that upstream and webhook URLs may reach, "
        "comma-separated CIDRs (`127.0.0.0/8,10.0.0.0/8`). Cloud metadata addresses are always refused.",
    )
    stdio_tenants: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("default",),
        description="Tenants that may register and run command (stdio) upstreams, which run programs on "
        "this server as its user; comma-separated tenant ids. Empty: none.",
    )
    stdio_commands: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Programs command upstreams may start, comma-separated: bare names (looked up on the "
        "server's PATH) or absolute paths, each matched exactly. Empty: any program.",
    )

    webhook_secret_grace_seconds: int = Field(
        default=86400,
        ge=0,
        le=30 * 86400,
        description="After a webhook's secret is rotated, how long the old secret still signs deliveries "
        "(both signatures are sent).",
    )
    webhook_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often each server process looks for webhook events and retries that other "
        "processes committed (its own wake it at once).",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="How long a webhook delivery waits for the receiver's answer."
    )
    webhook_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How long a process holds a webhook delivery it is sending; longer than the timeout. "
        "A delivery whose process died is sent again once its lease has run out.",
    )

    idempotency_ttl_seconds: int = Field(
        default=86400,
        ge=60,
        le=365 * 86400,
        description="How long an Idempotency-Key is remembered: the same key within it replays the first "
        "answer; the retention sweep deletes older keys, and the key may then be used anew.",
    )
    payment_authorization_ttl_seconds: int = Field(
        default=7 * 86400,
        ge=60,
        le=365 * 86400,
        description="How long a payment authorization may wait to be captured or voided. Older ones are "
        "expired by the retention sweep: their amount goes back to the session's budget, with a ledger "
        "entry.",
    )
    retention_sweep_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How often each server process tries the retention sweep (expired Idempotency-Keys, "
        "payment authorizations, cached sessions); one process of all replicas runs it at a time.",
    )

    _split_lists = field_validator("outbound_allow", "custom_scopes", mode="before")(comma_list)
    _split_stdio = field_validator("stdio_tenants", "stdio_commands", mode="before")(comma_list)

    @field_validator("stdio_tenants")
    @classmethod
    def _check_tenant_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [tenant for tenant in value if not TENANT_ID.fullmatch(tenant)]
        if bad:
            raise ValueError(f"tenant ids are 1 to 64 lowercase letters, digits, '_' or '-': {bad}")
        return value

    @field_validator("stdio_commands")
    @classmethod
    def _check_programs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(program_entry(entry) for entry in value)

    @field_validator("custom_scopes")
    @classmethod
    def _check_scope_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not SCOPE_NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"scope names must be at most 64 lowercase letters, digits, '_', '-' or '.', starting "
                f"with a letter: {bad}"
            )
        return value

    @model_validator(mode="after")
    def _check_lease(self) -> Settings:
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError(
                f"webhook_lease_seconds ({self.webhook_lease_seconds:g}) must be longer than "
                f"webhook_timeout_seconds ({self.webhook_timeout_seconds:g}): else a slow delivery is sent "
                "twice"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL of the configured store."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'haldir.db').resolve()}"


class ClientSettings(BaseSettings):
    """What the SDK and the CLI's client commands need to reach a server."""

    model_config = SettingsConfigDict(env_prefix="HALDIR_", extra="ignore", frozen=True)

    url: str = Field(default="http://127.0.0.1:8000", description="Base URL of a Haldir server.")
    api_key: str | None = Field(default=None, description="API key (`hld_…`) the client authenticates with.")


class GatewaySettings(BaseSettings):
    """The session `haldir proxy` governs its calls under: an existing one, or one it creates at start."""

    model_config = SettingsConfigDict(env_prefix="HALDIR_", extra="ignore", frozen=True)

    session_id: str | None = Field(default=None, description="An existing session to act under.")
    agent_id: str | None = Field(
        default=None,
        description="Without a session id: the new session's agent; unset: `proxy-<key prefix>`.",
    )
    scopes: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("execute",), description="Without a session id: the new session's scopes, comma-separated."
    )
    spend_limit: str | None = Field(default=None, description="Without a session id: its budget in USD.")
    proxy_poll_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="How often `haldir proxy` looks for changed upstream tools."
    )

    _split_scopes = field_validator("scopes", mode="before")(comma_list)
