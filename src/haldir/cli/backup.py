"""`haldir backup` and `haldir restore`: the SQLite store copied online into one file, and put back into a
data dir after it verifies (operator commands on the configured store)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from haldir.backup import Backup, Manifest, Restored, create_backup, restore_backup, sqlite_database
from haldir.cli.operator import run
from haldir.cli.output import AsJson, print_json
from haldir.clock import SystemClock
from haldir.settings import Settings

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def backup(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", dir_okay=False, help="The backup file; replaced only once it is complete."
        ),
    ],
    keys_out: Annotated[
        Path | None,
        typer.Option(
            "--keys-out",
            dir_okay=False,
            help="Also write the data dir's key files (Vault master key, log signing key) to this second "
            "file. Keep it apart from the backup: together they open every secret.",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Back up the SQLite store into one file while servers keep serving (SQLite's online backup).

    The file holds a consistent copy of the store and a manifest (schema, each tenant's ledger size and
    root hash); never the keys, unless --keys-out writes them to a file of their own. On PostgreSQL use
    pg_dump: see docs/operations.md.
    """
    settings = Settings()
    started = time.monotonic()
    done: Backup = run(lambda: create_backup(settings, out=out, keys_out=keys_out, now=SystemClock().now()))
    seconds = time.monotonic() - started
    if as_json:
        print_json(
            {
                "out": str(done.out),
                "keys_out": None if done.keys_out is None else str(done.keys_out),
                "keys": list(done.keys),
                "seconds": round(seconds, 3),
                **_summary(done.manifest),
            }
        )
        return
    manifest = done.manifest
    stderr.print(
        f"backed up {manifest.entries} ledger entries of {len(manifest.ledgers)} tenant(s), "
        f"{manifest.database_bytes} bytes, to {escape(str(done.out))} in {seconds:.1f} s"
    )
    if done.keys_out is None:
        stderr.print(
            "the backup holds no keys: keep the Vault master key and the log signing key (the data dir's "
            "key files, or HALDIR_ENCRYPTION_KEY and HALDIR_LOG_SIGNING_KEY) safe, apart from it"
        )
    else:
        stderr.print(f"keys ({', '.join(done.keys)}) written to {escape(str(done.keys_out))}: store it apart")


def restore(
    archive: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A file `haldir backup` wrote.")
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", file_okay=False, help="Restore into this data dir; default HALDIR_DATA_DIR."
        ),
    ] = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys", exists=True, dir_okay=False, help="A keys file `haldir backup --keys-out` wrote."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing store (and differing key files); servers stopped."),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Restore a backup into a data dir, verifying it first: its checksum, its manifest, every tenant's
    whole ledger and, with --keys, that the keys are this deployment's. An existing store is kept unless
    --force."""
    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    database = sqlite_database(settings) if data_dir is None else data_dir / "haldir.db"
    started = time.monotonic()
    done: Restored = run(
        lambda: restore_backup(archive, settings=settings, database=database, keys=keys, force=force)
    )
    seconds = time.monotonic() - started
    if as_json:
        print_json(
            {
                "database": str(done.database),
                "keys": list(done.keys),
                "vault": done.vault,
                "missing_master_key_versions": list(done.missing_key_versions),
                "notes": list(done.notes),
                "seconds": round(seconds, 3),
                "verified": True,
                **_summary(done.manifest),
            }
        )
        return
    stderr.print(
        f"restored {escape(str(done.database))}: {done.manifest.entries} ledger entries verified "
        f"in {seconds:.1f} s; Vault: {done.vault}"
    )
    for note in done.notes:
        stderr.print(f"note: {escape(note)}")


def _summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "created_at": manifest.created_at,
        "schema_revision": manifest.schema_revision,
        "bytes": manifest.database_bytes,
        "sha256": manifest.database_sha256,
        "entries": manifest.entries,
        "ledgers": [
            {"tenant_id": h.tenant_id, "tree_size": h.tree_size, "root_hash": h.root_hash.hex()}
            for h in manifest.ledgers
        ],
        "master_key_versions": sorted(manifest.master_keys),
    }
