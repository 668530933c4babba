"""`haldir compliance`: fetch the signed evidence pack from a server, and verify a pack with the log's public
key alone, or ask the server whether it signed it and its ledger still extends the pack's checkpoint."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from haldir.cli.output import AsJson, print_json
from haldir.cli.remote import connect
from haldir.core.checkpoints import CheckpointError, Verifier
from haldir.core.evidence import VerifiedEvidence, parse_document, verify_evidence
from haldir.errors import EvidenceTampered, InvalidRequest

app = typer.Typer(
    help="Signed compliance evidence: `evidence` fetches a pack (HALDIR_URL, HALDIR_API_KEY with "
    "admin:read); `verify` checks one offline with --key, or asks the server (audit:read).",
    no_args_is_help=True,
)

_EXTENSIONS: dict[str, Literal["json", "md"]] = {".md": "md", ".markdown": "md", ".json": "json"}


class Format(StrEnum):
    md = "md"
    json = "json"


@app.command("evidence")
def evidence(
    out: Annotated[Path, typer.Option("--out", "-o", dir_okay=False, help="File to write (.md or .json).")],
    since: Annotated[
        str | None,
        typer.Option(help="Start, inclusive: a date (midnight UTC) or an ISO 8601 time with a zone."),
    ] = None,
    until: Annotated[str | None, typer.Option(help="End, exclusive (default now): a date or a time.")] = None,
    fmt: Annotated[
        Format | None, typer.Option("--format", "-f", help="md or json (default: from the file's extension).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Write the tenant's signed evidence pack for a period, e.g. `--since 2026-01-01 --out evidence.md`.

    The pack is checked against the key it names before it is written; give an auditor the log's public key
    (`vkey` of GET /v1/audit/log-key) from a source they trust, to check it with `haldir compliance verify`.
    """
    chosen = (fmt.value if fmt else None) or _EXTENSIONS.get(out.suffix.lower())
    if chosen is None:
        raise InvalidRequest(
            f"cannot tell the format of {out.name} from its extension: add --format md or json"
        )
    window = _moment(since, "--since"), _moment(until, "--until")
    with connect(needs="admin:read") as client:
        document = client.compliance_evidence(since=window[0], until=window[1], format=chosen)
    verified = verify_evidence(document, _named_key(document))
    _write(out, document)
    result = {"path": str(out), "format": chosen, **_summary(verified)}
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"wrote {out}: evidence of {verified.tenant_id} from {result['since']} to {result['until']}, "
        f"against checkpoint {verified.checkpoint.tree_size}; SHA-256 {verified.digest}"
    )
    typer.echo(f"check it with: haldir compliance verify {out} --key {verified.vkey}")


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A pack, .md or .json.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="The log's verifier key (`vkey` of GET /v1/audit/log-key), from a source you trust: checks "
            "offline. Without it, the server at HALDIR_URL is asked (audit:read).",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Verify a pack: every number, byte and line; exits 9 with one line naming what differs."""
    document = file.read_bytes()
    result = _offline(document, key) if key is not None else _online(document)
    if as_json:
        print_json({"ok": True, **result})
        return
    typer.echo(f"ok: {result['message']}")


def _offline(document: bytes, key: str) -> dict[str, Any]:
    try:
        verifier = Verifier.from_vkey(key.strip())
    except CheckpointError as exc:
        raise InvalidRequest(f"--key is not a verifier key: {exc.reason}") from None
    verified = verify_evidence(document, verifier)
    summary = _summary(verified)
    message = (
        f"evidence of {verified.tenant_id} from {summary['since']} to {summary['until']}, signed by "
        f"{verified.vkey}, against checkpoint {verified.checkpoint.tree_size} of {verified.checkpoint.origin}"
    )
    return {"mode": "offline", **summary, "message": message}


def _online(document: bytes) -> dict[str, Any]:
    pack, form = parse_document(document)  # a Markdown file's text is checked here against its pack
    with connect(needs="audit:read") as client:
        answer = client.check_evidence_manifest(pack)
    if not answer["valid"]:
        raise EvidenceTampered(
            f"the server does not confirm this pack: {answer['problem']}", section=None, field=None
        )
    message = (
        f"the server's log key {answer['log_key']} signed this {form} pack (SHA-256 {answer['digest']}), "
        f"and its ledger at tree size {answer['tree_size']} extends the pack's checkpoint "
        f"{answer['pack_tree_size']}"
    )
    return {
        "mode": "server",
        "digest": answer["digest"],
        "key": answer["log_key"],
        "tree_size": answer["tree_size"],
        "pack_tree_size": answer["pack_tree_size"],
        "message": message,
    }


def _format(fmt: Format | None, out: Path) -> Literal["json", "md"]:
    if fmt is not None:
        return "md" if fmt is Format.md else "json"
    found = _EXTENSIONS.get(out.suffix.lower())
    if found is None:
        raise InvalidRequest(
            f"cannot tell the format of {out.name} from its extension: add --format md or json"
        )
    return found


def _summary(verified: VerifiedEvidence) -> dict[str, Any]:
    return {
        "tenant_id": verified.tenant_id,
        "since": verified.period_since.isoformat().replace("+00:00", "Z"),
        "until": verified.period_until.isoformat().replace("+00:00", "Z"),
        "digest": verified.digest,
        "key": verified.vkey,
        "tree_size": verified.checkpoint.tree_size,
    }


def _named_key(document: str) -> Verifier:
    """The key the pack names: enough to catch a pack damaged on its way, not to trust it."""
    pack, _ = parse_document(document)
    try:
        return Verifier.from_vkey(str(pack["signature"]["key"]))
    except (CheckpointError, KeyError, TypeError) as exc:
        raise EvidenceTampered(
            f"the server's pack names no usable key: {exc}", section=8, field="key"
        ) from None


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"{option} must be a date such as 2026-01-01 or an ISO 8601 time with a zone"
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{option} needs a time zone, e.g. {value}Z")
    return moment


def _write(path: Path, text: str) -> None:
    """Replace `path` only once the whole pack is written."""
    partial = path.with_name(f"{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8", newline="")
        os.replace(partial, path)
    except OSError as exc:
        raise InvalidRequest(f"cannot write {path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
