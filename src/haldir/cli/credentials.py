"""Where `haldir login` keeps the server URL and API key: a file only this user can read, in the user's
config directory (`platformdirs`; on Linux `$XDG_CONFIG_HOME/haldir`, by default `~/.config/haldir`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from haldir.errors import ConfigurationError

FILE_NAME = "credentials.json"


@dataclass(frozen=True)
class Credentials:
    url: str
    api_key: str

    def __repr__(self) -> str:
        return f"Credentials(url={self.url!r}, api_key='{self.api_key[:12]}…')"


def credentials_path() -> Path:
    return platformdirs.user_config_path("haldir") / FILE_NAME


def save_credentials(found: Credentials) -> Path:
    """Write them for this user only (directory 0700, file 0600), replacing the old file atomically."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.unlink(missing_ok=True)
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"url": found.url, "api_key": found.api_key}, handle)
    staging.replace(path)
    return path


def load_credentials() -> Credentials | None:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
        return Credentials(url=str(data["url"]), api_key=str(data["api_key"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot read the saved login {path} ({type(exc).__name__}): run 'haldir login' again"
        ) from None


def forget_credentials() -> bool:
    """Remove the saved login; whether there was one."""
    path = credentials_path()
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed
