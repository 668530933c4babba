"""The files of a backup: tar archives written whole (mode 0600, in place only once complete) and read
member by member, and single files put in place atomically."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from haldir.errors import Conflict, InvalidRequest

MANIFEST = "manifest.json"  # the first member of every archive


def digest(path: Path) -> tuple[str, int]:
    """The file's SHA-256 (hex) and size."""
    hashed, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            hashed.update(chunk)
            size += len(chunk)
    return hashed.hexdigest(), size


def write_archive(path: Path, manifest: dict[str, Any], files: list[tuple[str, Path]]) -> None:
    """A tar file (0600) of the manifest and `files`, which takes `path`'s place only once complete."""
    partial = path.with_name(f"{path.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InvalidRequest(f"cannot write {partial}: {exc.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            with tarfile.open(fileobj=handle, mode="w") as tar:
                text = json.dumps(manifest, indent=2).encode()
                _add(tar, MANIFEST, io.BytesIO(text), len(text))
                for name, source in files:
                    with source.open("rb") as data:
                        _add(tar, name, data, source.stat().st_size)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        sync_dir(path.parent)
    finally:
        partial.unlink(missing_ok=True)


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    tar.addfile(info, data)


@contextmanager
def members(archive: Path, expected: str, what: str) -> Iterator[tuple[dict[str, Any], tarfile.TarFile]]:
    """The archive's manifest (checked to be of the `expected` format) and the open archive."""
    try:
        tar = tarfile.open(archive, mode="r:")  # noqa: SIM115 - closed by the `with tar` below
    except (OSError, tarfile.TarError) as exc:
        raise InvalidRequest(f"{archive} is not a {what}: {exc}") from None
    with tar:
        try:
            first = tar.next()
            handle = tar.extractfile(first) if first is not None and first.name == MANIFEST else None
            manifest = json.loads(handle.read(1 << 20)) if handle is not None else None
        except (tarfile.TarError, ValueError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("format") != expected:
            raise InvalidRequest(f"{archive} is not a {what}: it starts with no {expected} manifest")
        yield manifest, tar


def member(tar: tarfile.TarFile, name: str, archive: Path) -> tarfile.TarInfo:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise InvalidRequest(f"{archive} is not a Haldir backup: it holds no {name}") from None
    if not member.isfile():
        raise InvalidRequest(f"{archive} is not a Haldir backup: its {name} is not a file")
    return member


@contextmanager
def extract(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path) -> Iterator[IO[bytes]]:
    handle = tar.extractfile(member)
    if handle is None:
        raise InvalidRequest(f"{archive}: {member.name} is not a file")
    with handle:
        try:
            yield handle
        except tarfile.TarError as exc:
            raise InvalidRequest(f"{archive} is damaged: {exc}") from None


def require_replaceable(path: Path, text: str, *, force: bool) -> None:
    """Refuse to replace an existing file that holds something else than `text`, unless `force`."""
    if not force and path.exists() and path.read_text() != text:
        raise Conflict(f"{path} exists and holds another key: pass --force to replace it")


def place_file(path: Path, text: str, *, force: bool) -> None:
    """Write `path` (0600) atomically; an existing different one only with `force`."""
    require_replaceable(path, text, force=force)
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.restoring-{secrets.token_hex(4)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def sync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
