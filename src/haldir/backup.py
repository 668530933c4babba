"""Backup and restore of a SQLite deployment: one archive holding an online copy of the store and a
manifest, and, only when asked for, the key files in a second archive. Apart, a leaked backup holds the
Vault's ciphertext without the master key that opens it, and checkpoints without the key that signs them."""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from haldir import __version__, logkey, vaultkey
from haldir import archive as archives
from haldir.core.checkpoints import CheckpointError, Signer, Verifier
from haldir.core.vault import parse_keyring
from haldir.errors import ConfigurationError, Conflict, InvalidRequest, LedgerTampered
from haldir.governor import verification
from haldir.settings import Settings
from haldir.store.engines import resolve_url
from haldir.store.snapshot import LogHead, copy_sqlite, log_heads, pinned_log_key
from haldir.store.sql import SqlStore

FORMAT, KEYS_FORMAT, FORMAT_VERSION = "haldir-backup", "haldir-keys", 1
DATABASE = "haldir.db"
MANIFEST = archives.MANIFEST
KEY_FILES = (vaultkey.KEY_FILE, logkey.KEY_FILE)
POSTGRES = (
    "this deployment's store is PostgreSQL, which `haldir backup` does not copy: take "
    "`pg_dump --format=custom` (restore with `pg_restore`), and keep the keys (the data dir's key files, "
    "or HALDIR_ENCRYPTION_KEY and HALDIR_LOG_SIGNING_KEY) apart from the dump; see docs/operations.md"
)
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_KIND = {
    FORMAT: "Haldir backup (haldir backup --out)",
    KEYS_FORMAT: "Haldir keys file (haldir backup --keys-out)",
}


@dataclass(frozen=True)
class Manifest:
    """What a backup holds, recorded when it was taken and checked again when it is restored."""

    created_at: str
    haldir_version: str
    schema_revision: str | None
    log_origin: str
    log_key: str | None
    master_keys: dict[int, str]  # version -> check value; never key material
    ledgers: tuple[LogHead, ...]
    database_sha256: str
    database_bytes: int

    @property
    def entries(self) -> int:
        return sum(head.tree_size for head in self.ledgers)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": self.created_at,
            "haldir_version": self.haldir_version,
            "backend": "sqlite",
            "schema_revision": self.schema_revision,
            "log_origin": self.log_origin,
            "log_key": self.log_key,
            "master_keys": {str(v): check for v, check in sorted(self.master_keys.items())},
            "ledgers": [
                {"tenant_id": h.tenant_id, "tree_size": h.tree_size, "root_hash": h.root_hash.hex()}
                for h in self.ledgers
            ],
            "database": {"file": DATABASE, "sha256": self.database_sha256, "bytes": self.database_bytes},
        }

    @classmethod
    def from_json(cls, data: Any, where: Path) -> Manifest:
        try:
            if data["format"] != FORMAT or data["format_version"] != FORMAT_VERSION:
                raise ValueError(f"format {data['format']!r} version {data['format_version']!r}")
            return cls(
                created_at=str(data["created_at"]),
                haldir_version=str(data["haldir_version"]),
                schema_revision=data["schema_revision"],
                log_origin=str(data["log_origin"]),
                log_key=data["log_key"],
                master_keys={int(v): str(check) for v, check in data["master_keys"].items()},
                ledgers=tuple(
                    LogHead(str(h["tenant_id"]), int(h["tree_size"]), bytes.fromhex(h["root_hash"]))
                    for h in data["ledgers"]
                ),
                database_sha256=str(data["database"]["sha256"]),
                database_bytes=int(data["database"]["bytes"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidRequest(
                f"{where} is not a Haldir backup (format {FORMAT} {FORMAT_VERSION}): its manifest is "
                f"unreadable ({type(exc).__name__}: {exc})"
            ) from None


@dataclass(frozen=True)
class Backup:
    out: Path
    manifest: Manifest
    keys_out: Path | None
    keys: tuple[str, ...]  # the key files written to keys_out


@dataclass(frozen=True)
class Restored:
    database: Path
    manifest: Manifest
    keys: tuple[str, ...]  # key files restored into the data dir
    vault: str  # "opens", "sealed" (a key it needs is not configured) or "empty" (no master key yet)
    missing_key_versions: tuple[int, ...]
    notes: tuple[str, ...]


def sqlite_database(settings: Settings) -> Path:
    """The SQLite file of the configured store; a clear refusal for PostgreSQL."""
    backend, url = resolve_url(settings.store_url)
    if backend != "sqlite":
        raise ConfigurationError(POSTGRES)
    return Path(str(url.database))


async def create_backup(settings: Settings, *, out: Path, keys_out: Path | None, now: datetime) -> Backup:
    """Copy the store online into `out` with its manifest; the key files into `keys_out` when given."""
    database, keys = _backup_inputs(settings, out=out, keys_out=keys_out)
    with tempfile.TemporaryDirectory(prefix=".haldir-backup-", dir=out.parent) as tmp:
        copy = Path(tmp) / DATABASE
        await anyio.to_thread.run_sync(copy_sqlite, database, copy)
        store = SqlStore.open(f"sqlite:///{copy}", pool_size=1)
        try:
            revision = await store.schema_revision()
            heads = tuple(await log_heads(store)) if revision else ()
            log_key = await pinned_log_key(store) if revision else None
            master_keys = await store.vault.master_keys() if revision else {}
        finally:
            await store.close()
        if revision is None:
            raise ConfigurationError(f"{database} is not a migrated Haldir store: run 'haldir migrate up'")
        digest, size = await anyio.to_thread.run_sync(archives.digest, copy)
        manifest = Manifest(
            created_at=now.isoformat(),
            haldir_version=__version__,
            schema_revision=revision,
            log_origin=settings.log_origin,
            log_key=log_key,
            master_keys=master_keys,
            ledgers=heads,
            database_sha256=digest,
            database_bytes=size,
        )
        await anyio.to_thread.run_sync(archives.write_archive, out, manifest.to_json(), [(DATABASE, copy)])
    if keys_out is not None:
        keys_manifest = {
            "format": KEYS_FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": now.isoformat(),
        }
        files = [(name, settings.data_dir / name) for name in keys]
        await anyio.to_thread.run_sync(archives.write_archive, keys_out, keys_manifest, files)
    return Backup(out, manifest, keys_out, keys)


def _backup_inputs(settings: Settings, *, out: Path, keys_out: Path | None) -> tuple[Path, tuple[str, ...]]:
    """The database to copy and the key files to write to `keys_out`, or a refusal that says why."""
    database = sqlite_database(settings)
    if not database.is_file():
        raise ConfigurationError(f"no SQLite store at {database}: nothing to back up (check HALDIR_DATA_DIR)")
    _require_dir(out.parent)
    if keys_out is None:
        return database, ()
    if keys_out.resolve() == out.resolve():
        raise InvalidRequest("--keys-out must name another file than --out: the point is to keep them apart")
    keys = _key_files(settings.data_dir)
    if not keys:
        raise ConfigurationError(
            f"{settings.data_dir} holds no key file ({', '.join(KEY_FILES)}): the keys come from "
            "HALDIR_ENCRYPTION_KEY and HALDIR_LOG_SIGNING_KEY, so keep those wherever you keep them"
        )
    return database, keys


async def restore_backup(
    archive: Path, *, settings: Settings, database: Path, keys: Path | None, force: bool
) -> Restored:
    """Restore `archive` into `database` (and the key files of `keys` beside it), verifying first.

    Steps, each of which leaves everything as it was when it fails:
      1. refuse an existing database unless `force`, and even then one that a process has open;
      2. unpack the copy beside the target and check its SHA-256 against the manifest;
      3. check the copy against the manifest (schema, each tenant's ledger size and root, log key)
         and verify every tenant's whole ledger, checkpoints included;
      4. check that the keys file holds the log key and the master keys the copy needs;
      5. put the key files, then the database, in place (each an atomic rename).
    """
    # Step 1: never replace a store by accident, nor one in use.
    _refuse_existing(database, force=force)
    staged = database.with_name(f".{database.name}.restoring-{secrets.token_hex(4)}")
    try:
        # Step 2: unpack, and the bytes are the ones backed up.
        manifest = await anyio.to_thread.run_sync(_unpack, archive, staged)
        key_texts = await anyio.to_thread.run_sync(_read_keys, keys) if keys is not None else {}
        # Step 3: the copy is what the manifest says, and its ledgers verify.
        needed = await _verify_copy(staged, manifest)
        # Step 4: the keys belong to this backup.
        _check_keys(key_texts, manifest, needed)
        # Step 5: in place, once no key file is in the way.
        for name, text in sorted(key_texts.items()):
            archives.require_replaceable(settings.data_dir / name, text, force=force)
        for name, text in sorted(key_texts.items()):
            archives.place_file(settings.data_dir / name, text, force=force)
        for suffix in _SQLITE_SIDE_FILES:  # a stale WAL beside the new file would be replayed into it
            database.with_name(database.name + suffix).unlink(missing_ok=True)
        os.replace(staged, database)
        archives.sync_dir(database.parent)
    finally:
        for leftover in (
            staged,
            *(staged.with_name(staged.name + s) for s in (*_SQLITE_SIDE_FILES, "-changes")),
        ):
            leftover.unlink(missing_ok=True)
    missing = _missing_master_keys(settings, manifest, needed)
    vault = "empty" if not manifest.master_keys else "sealed" if missing else "opens"
    notes = []
    if settings.log_origin != manifest.log_origin:
        notes.append(f"set HALDIR_LOG_ORIGIN={manifest.log_origin}: the restored logs are named so")
    signing = _configured_log_key(settings)
    if manifest.log_key is not None and signing is not None and signing != manifest.log_key:
        notes.append(
            f"the log signing key configured ({signing}) is not the one the restored checkpoints are signed "
            f"with ({manifest.log_key}): the server refuses to start until it is (restore it with --keys)"
        )
    if vault == "sealed":
        notes.append(
            f"the Vault stays sealed until its master key version(s) {list(missing)} are configured: restore "
            f"{vaultkey.KEY_FILE} with --keys, or set HALDIR_ENCRYPTION_KEY"
        )
    return Restored(database, manifest, tuple(sorted(key_texts)), vault, missing, tuple(notes))


async def _verify_copy(copy: Path, manifest: Manifest) -> set[int]:
    """Check the unpacked copy against its manifest; the master key versions it needs held."""
    store = SqlStore.open(f"sqlite:///{copy}", pool_size=1)
    try:
        if await store.schema_revision() != manifest.schema_revision:
            raise LedgerTampered("the backup's database is at another schema revision than its manifest says")
        heads = await log_heads(store)
        if tuple(heads) != manifest.ledgers:
            raise LedgerTampered("the backup's ledgers differ from the sizes and roots its manifest records")
        vkey = await pinned_log_key(store)
        if vkey != manifest.log_key:
            raise LedgerTampered("the backup's database pins another log key than its manifest records")
        for head in heads:
            result = await verification.verify_log(
                store.ledger,
                head.tenant_id,
                verifier=lambda: _verifier(vkey),
                origin=f"{manifest.log_origin}/{head.tenant_id}",
            )
            if not result.ok:
                bad = result.first_bad
                where = f"leaf {bad.leaf_index} ({bad.entry_id}): {bad.reason}" if bad else "its end"
                raise LedgerTampered(f"the backup's ledger of tenant {head.tenant_id} fails at {where}")
        registered = await store.vault.master_keys()
        if registered != manifest.master_keys:
            raise LedgerTampered("the backup's Vault master key versions differ from its manifest's")
        in_use = await store.vault.data_key_counts()
    finally:
        await store.close()
    return {max(registered), *in_use} if registered else set()


def _verifier(vkey: str | None) -> Verifier:
    if vkey is None:
        raise LedgerTampered("the backup's database holds checkpoints but no log key to verify them")
    return Verifier.from_vkey(vkey)


def _check_keys(key_texts: dict[str, str], manifest: Manifest, needed: set[int]) -> None:
    signing = key_texts.get(logkey.KEY_FILE)
    if signing is not None:
        try:
            vkey = Signer.from_skey(signing.strip()).vkey
        except CheckpointError as exc:
            raise InvalidRequest(
                f"the keys file's {logkey.KEY_FILE} is not a signing key: {exc.reason}"
            ) from None
        if manifest.log_key is not None and vkey != manifest.log_key:
            raise ConfigurationError(
                f"the keys file's log signing key is {vkey}, but this backup's checkpoints are signed with "
                f"{manifest.log_key}: these keys belong to another deployment"
            )
    master = key_texts.get(vaultkey.KEY_FILE)
    if master is not None:
        try:
            held = {key.check_value for key in parse_keyring(master)}
        except ValueError as exc:
            raise InvalidRequest(
                f"the keys file's {vaultkey.KEY_FILE} is not a master key file: {exc}"
            ) from None
        lacking = sorted(v for v in needed if manifest.master_keys[v] not in held)
        if lacking:
            raise ConfigurationError(
                f"the keys file's {vaultkey.KEY_FILE} lacks master key version(s) {lacking} of this backup "
                "(check values " + ", ".join(manifest.master_keys[v] for v in lacking) + "): wrong keys file?"
            )


def _configured_log_key(settings: Settings) -> str | None:
    """The verifier key of the configured signing key, if one is configured; never generates one."""
    if settings.log_signing_key is not None:
        text = settings.log_signing_key.get_secret_value()
    elif (settings.data_dir / logkey.KEY_FILE).is_file():
        text = (settings.data_dir / logkey.KEY_FILE).read_text()
    else:
        return None
    try:
        return Signer.from_skey(text.strip()).vkey
    except CheckpointError:
        return None  # the server's own start-up check says what is wrong with it


def _missing_master_keys(settings: Settings, manifest: Manifest, needed: set[int]) -> tuple[int, ...]:
    try:
        keyring, _ = vaultkey.load_master_keys(settings, generate=False)
    except ConfigurationError:
        keyring = None
    return tuple(
        sorted(v for v in needed if keyring is None or keyring.find(manifest.master_keys[v]) is None)
    )


def _key_files(data_dir: Path) -> tuple[str, ...]:
    return tuple(name for name in KEY_FILES if (data_dir / name).is_file())


def _require_dir(directory: Path) -> None:
    if not directory.is_dir():
        raise InvalidRequest(f"{directory} is not a directory: cannot write a backup there")


def _unpack(archive: Path, target: Path) -> Manifest:
    with archives.members(archive, FORMAT, _KIND[FORMAT]) as (data, tar):
        manifest = Manifest.from_json(data, archive)
        member = archives.member(tar, DATABASE, archive)
        digest, size = hashlib.sha256(), 0
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out, archives.extract(tar, member, archive) as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    if (digest.hexdigest(), size) != (manifest.database_sha256, manifest.database_bytes):
        raise InvalidRequest(
            f"{archive} is damaged: its database has SHA-256 {digest.hexdigest()} ({size} bytes), "
            f"the manifest records {manifest.database_sha256} ({manifest.database_bytes} bytes)"
        )
    return manifest


def _read_keys(archive: Path) -> dict[str, str]:
    texts = {}
    with archives.members(archive, KEYS_FORMAT, _KIND[KEYS_FORMAT]) as (_, tar):
        for member in tar:
            if member.name == MANIFEST:
                continue
            if member.name not in KEY_FILES or not member.isfile():
                raise InvalidRequest(f"{archive} holds {member.name!r}, which is not a Haldir key file")
            with archives.extract(tar, member, archive) as source:
                texts[member.name] = source.read(1 << 20).decode()
    return texts


def _refuse_existing(database: Path, *, force: bool) -> None:
    if database.exists():
        if not force:
            raise Conflict(
                f"{database} exists: restoring would replace this deployment's store. Restore into a new "
                "--data-dir, or stop every server on it and pass --force"
            )
        _require_unused(database)
    database.parent.mkdir(parents=True, exist_ok=True, mode=0o700)


def _require_unused(database: Path) -> None:
    """Refuse a database that any process has open: leaving WAL mode needs the only connection."""
    try:
        conn = sqlite3.connect(database, timeout=0)
        try:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise Conflict(
            f"{database} is in use ({exc}): stop every server on it before restoring over it"
        ) from None
    if mode is None or str(mode[0]).lower() != "delete":
        raise Conflict(f"{database} is in use: stop every server on it before restoring over it")
