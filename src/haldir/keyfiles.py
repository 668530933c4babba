"""Key files in the data dir, created once however many processes start at the same moment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def create_private(path: Path, text: str) -> bool:
    """Create `path` (mode 0600, its directory 0700) holding `text`, unless it exists; whether this call
    created it. The file appears whole or not at all: it is written and synced under a temporary name,
    then linked into place, which fails when another process (a worker starting beside this one)
    linked its own first; the caller then reads that one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)
