"""The log signing key: from settings, or generated once into the data dir, and pinned in the store."""

from __future__ import annotations

import os
from pathlib import Path

from haldir.core.checkpoints import CheckpointError, Signer, generate_signer
from haldir.errors import ConfigurationError
from haldir.settings import Settings

KEY_FILE = "log-signing.key"


def load_log_signer(settings: Settings) -> tuple[Signer, bool]:
    """The configured signer, and whether it was generated just now."""
    if settings.log_signing_key is not None:
        return _parse(settings.log_signing_key.get_secret_value(), "HALDIR_LOG_SIGNING_KEY", settings), False
    path = settings.data_dir / KEY_FILE
    if path.exists():
        return _parse(path.read_text().strip(), str(path), settings), False
    signer = generate_signer(settings.log_origin)
    _write_private(path, signer.skey + "\n")
    return signer, True


def _parse(text: str, where: str, settings: Settings) -> Signer:
    try:
        signer = Signer.from_skey(text)
    except CheckpointError as exc:
        raise ConfigurationError(f"{where} is not a signing key ('PRIVATE+KEY+…'): {exc.reason}") from None
    if signer.name != settings.log_origin:
        raise ConfigurationError(
            f"{where} is a key named {signer.name!r}, but HALDIR_LOG_ORIGIN is {settings.log_origin!r}"
        )
    return signer


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
