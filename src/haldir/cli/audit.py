"""`haldir audit`: export the ledger from a server, and verify an export with no server at all."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from haldir.cli.audit_tail import tail
from haldir.cli.output import AsJson, print_json
from haldir.cli.remote import connect
from haldir.client import HaldirClient
from haldir.client.money import plain
from haldir.core.checkpoints import CheckpointError, Verifier
from haldir.core.export import (
    CSV_COLUMNS,
    ENTRY_FIELDS,
    checkpoint_line,
    csv_row,
    entry_line,
    verify_export,
)
from haldir.errors import InvalidRequest, LedgerTampered

app = typer.Typer(
    help="Export and verify the audit ledger (client commands: they reach HALDIR_URL with HALDIR_API_KEY).",
    no_args_is_help=True,
)
stderr = Console(stderr=True, highlight=False)
app.command("tail")(tail)


class Format(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


@app.command("export")
def export(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", dir_okay=False, help="File to write; replaced only once the export is done."
        ),
    ],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="jsonl (verifiable) or csv.")] = Format.jsonl,
    since: Annotated[
        str | None, typer.Option(help="CSV only: entries at or after this ISO 8601 time with a zone.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="CSV only: entries before this ISO 8601 time.")] = None,
    as_json: AsJson = False,
) -> None:
    """Export the ledger in leaf order, up to the checkpoint fetched first.

    JSONL (default) is always the whole log from its first entry, ending with that signed checkpoint.

    It is verified as it is written; check it later with `haldir audit verify --offline FILE --key VKEY`.

    CSV is for reading: it honours --since and --until, and cannot be verified.
    """
    window = _time(since, "--since"), _time(until, "--until")
    if fmt is Format.jsonl and window != (None, None):
        raise InvalidRequest(
            "--since and --until apply to --format csv only: a JSONL export is always the whole log, "
            "from its first entry, so that it can be verified"
        )
    with connect(needs="audit:read") as client, _replacing(out) as handle, _progress() as progress:
        head = client.tree_head()
        size = int(head["tree_size"])
        task = progress.add_task("exporting", total=size)

        def advance(done: int) -> None:
            progress.update(task, completed=done)

        entries = _entries(client, size=size, since=window[0], until=window[1], advance=advance)
        if fmt is Format.jsonl:
            verifier = _verifier(str(client.log_key()["vkey"]))
            lines = _written(handle, _jsonl(entries, head["checkpoint"]))
            count = verify_export(lines, verifier).entries
        else:
            count = _write_csv(handle, entries)
        advance(size)
    if as_json:
        print_json({"out": str(out), "format": fmt.value, "entries": count, "tree_size": size})
    else:
        stderr.print(f"wrote {count} entries to {out} (checkpoint at tree size {size})")


@app.command("verify")
def verify(
    offline: Annotated[
        Path | None,
        typer.Option(
            "--offline",
            exists=True,
            dir_okay=False,
            help="A JSONL export to verify with no server, using --key.",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="The log's verifier key (`<name>+<hash>+<base64>`, `vkey` of GET /v1/audit/log-key), "
            "from a source you trust.",
        ),
    ] = None,
    origin: Annotated[
        str | None, typer.Option("--origin", help="The checkpoint origin to require, e.g. haldir.local/acme.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Verify an export offline (--offline FILE --key VKEY), or else ask the server to verify its whole log.

    Offline, editing, inserting, reordering or deleting any line is detected, and the first bad line is named.
    """
    if offline is None:
        if key is not None or origin is not None:
            raise InvalidRequest("--key and --origin go with --offline FILE")
        with connect(needs="audit:read") as client:
            result = client.verify_log()
        if not result["ok"]:
            bad = result.get("first_bad") or {}
            raise LedgerTampered(
                f"the server's log fails verification at leaf {bad.get('leaf_index')} "
                f"({bad.get('entry_id')}): {bad.get('reason')}"
            )
        if as_json:
            print_json({"ok": True, "entries": result["tree_size"], "verified_by": "server"})
        else:
            print(f"ok: {result['tree_size']} entries, verified by the server")
        return
    if key is None:
        raise InvalidRequest("--offline needs --key VKEY: the log's verifier key, from a source you trust")
    verifier = _verifier(key)
    with offline.open("rb") as handle:
        report = verify_export(handle, verifier, origin=origin)
    if as_json:
        checkpoint = report.checkpoint
        print_json(
            {
                "ok": True,
                "entries": report.entries,
                "verified_by": "offline",
                "origin": checkpoint.origin,
                "tree_size": checkpoint.tree_size,
                "root_hash": checkpoint.root_hash.hex(),
            }
        )
        return
    print(f"ok: {report.entries} entries, checkpoint verified")
    print(f"origin {report.checkpoint.origin}, root hash {report.checkpoint.root_hash.hex()}")


def _verifier(vkey: str) -> Verifier:
    try:
        return Verifier.from_vkey(vkey.strip())
    except CheckpointError as exc:
        raise InvalidRequest(f"--key is not a verifier key: {exc.reason}") from None


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{option} must be an ISO 8601 time such as 2026-04-05T19:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{option} needs a time zone, e.g. {value}Z")
    return moment


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
    )


def _entries(
    client: HaldirClient,
    *,
    size: int,
    since: datetime | None,
    until: datetime | None,
    advance: Callable[[int], None],
) -> Iterator[dict[str, Any]]:
    """Entries below leaf `size` in leaf order, as `{"record", "leaf_index", …}` (the API lists them flat),
    exactly as the server sent them: the SDK's `Decimal` money back to its decimal strings."""
    for flat in map(plain, client.iter_entries(order="asc", since=since, until=until)):
        index = int(flat["leaf_index"])
        if index >= size:
            return
        chain = {name: flat[name] for name in ENTRY_FIELDS[1:]}
        yield {"record": {k: v for k, v in flat.items() if k not in chain}, **chain}
        advance(index + 1)


def _jsonl(entries: Iterable[dict[str, Any]], note: str) -> Iterator[str]:
    for entry in entries:
        yield entry_line(entry)
    yield checkpoint_line(note)


def _written(handle: IO[str], lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        handle.write(line)
        yield line


def _write_csv(handle: IO[str], entries: Iterable[dict[str, Any]]) -> int:
    writer = csv.writer(handle)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for entry in entries:
        writer.writerow(csv_row(entry))
        count += 1
    return count


@contextmanager
def _replacing(path: Path) -> Iterator[IO[str]]:
    """A file that takes `path`'s place only when the block succeeds: no half export is left behind."""
    partial = path.with_name(f"{path.name}.partial")
    try:
        handle = partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise InvalidRequest(f"cannot write {partial}: {exc.strerror}") from None
    try:
        with handle:
            yield handle
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
