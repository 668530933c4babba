"""The Vault's master keys: from HALDIR_ENCRYPTION_KEY, or from a key file in the data dir that is
generated on first start and that `haldir vault rotate-key` extends."""

from __future__ import annotations

import os
from pathlib import Path

from haldir.core.vault import MasterKey, generate_master_key, parse_keyring
from haldir.errors import ConfigurationError
from haldir.governor.keyring import MasterKeyring
from haldir.keyfiles import create_private
from haldir.settings import Settings

KEY_FILE = "vault-master.key"


def load_master_keys(settings: Settings, *, generate: bool = True) -> tuple[MasterKeyring | None, bool]:
    """The configured keyring, and whether its key was generated just now (only when nothing is
    configured and `generate`; the store then decides whether a new key may be used at all)."""
    if settings.encryption_key is not None:
        keys = _parse(settings.encryption_key.get_secret_value(), "HALDIR_ENCRYPTION_KEY")
        return MasterKeyring(keys, source="HALDIR_ENCRYPTION_KEY"), False
    path = key_file(settings)
    generated = False
    if not path.exists():
        if not generate:
            return None, False
        # False when another worker starting beside this one made it first: its key is the one
        generated = create_private(path, generate_master_key().encode() + "\n")
    return MasterKeyring(_read(path), source=str(path), reload=lambda: _read(path)), generated


def key_file(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def write_key_file(path: Path, keys: list[MasterKey]) -> None:
    """Replace the keyring at `path` (0600), atomically: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = "".join(f"{key.encode()}\n" for key in keys)
    target = path.with_name(path.name + ".new")
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(target, path)


def _read(path: Path) -> tuple[MasterKey, ...]:
    return _parse(path.read_text(), str(path))


def _parse(text: str, where: str) -> tuple[MasterKey, ...]:
    try:
        return parse_keyring(text)
    except ValueError as exc:
        raise ConfigurationError(
            f"{where} is not a master key: {exc}. Generate one with 'haldir vault generate-key'"
        ) from None
