"""The log signing key: from settings, or generated once into the data dir, and pinned in the store."""

from __future__ import annotations

from haldir.core.checkpoints import CheckpointError, Signer, generate_signer
from haldir.errors import ConfigurationError
from haldir.keyfiles import create_private
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
    if not create_private(path, signer.skey + "\n"):  # another worker starting beside this one made it
        return _parse(path.read_text().strip(), str(path), settings), False
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
