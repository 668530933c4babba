"""Audit exports: the JSONL and CSV formats, and offline verification of a JSONL export with the log's key.

A JSONL export is the whole log from leaf 0, one line per entry in leaf order,
`{"record", "leaf_index", "leaf_hash", "prev_hash", "entry_hash"}`, then one last line
`{"checkpoint": "<signed note>"}`: the checkpoint it was taken at, whose tree size is the number of entries.
Every line is written in one exact form (compact, ASCII-only JSON ending in a newline), so a verifier can
tell that not a byte was changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from haldir.core import merkle
from haldir.core.checkpoints import Checkpoint, CheckpointError, Verifier, parse_checkpoint
from haldir.core.ledger import GENESIS, ChainError, from_hex, verify_entry
from haldir.errors import InvalidRequest, LedgerTampered

ENTRY_FIELDS: Final = ("record", "leaf_index", "leaf_hash", "prev_hash", "entry_hash")
CSV_COLUMNS: Final = (
    "leaf_index",
    "entry_id",
    "timestamp",
    "session_id",
    "agent_id",
    "tool",
    "action",
    "status",
    "cost_usd",
    "charged_usd",
    "flagged",
    "flag_reason",
    "details",
    "leaf_hash",
    "entry_hash",
)
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_DECIMAL: Final = re.compile(r"-?[0-9]+\.[0-9]+")  # a signed amount is data, not a formula
_ID: Final = re.compile(r"[A-Za-z0-9_]{1,100}")


@dataclass(frozen=True)
class ExportReport:
    """What a verified export holds: its number of entries and the checkpoint that signs them all."""

    entries: int
    checkpoint: Checkpoint


def entry_line(entry: Mapping[str, Any]) -> str:
    """The JSONL line of one entry, given as a mapping with the `ENTRY_FIELDS`."""
    return _dumps({name: entry[name] for name in ENTRY_FIELDS})


def checkpoint_line(note: str) -> str:
    """The last line of a JSONL export: the signed checkpoint note it was taken at."""
    return _dumps({"checkpoint": note})


def _dumps(item: Mapping[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=True, separators=(",", ":"), allow_nan=False) + "\n"


def csv_row(entry: Mapping[str, Any]) -> list[str]:
    """The CSV cells of one entry, in `CSV_COLUMNS` order.

    Text from agents is untrusted: a cell a spreadsheet would run as a formula is prefixed with `'`.
    """
    record = entry["record"]
    cells: list[str] = []
    for column in CSV_COLUMNS:
        value = entry[column] if column in ("leaf_index", "leaf_hash", "entry_hash") else record.get(column)
        if column == "details":
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        cells.append(_cell(value))
    return cells


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) and not _DECIMAL.fullmatch(text) else text


def verify_export(
    lines: Iterable[str | bytes], verifier: Verifier, *, origin: str | None = None
) -> ExportReport:
    """Verify a JSONL export with nothing but the log's public key; raise `LedgerTampered` otherwise.

    The error's message and `details` name the first bad line (`line`, 1-based) and, for an entry line,
    its `entry_id`. Read the file in binary mode (or text mode with `newline=""`) so line ends arrive intact.

    Steps:
      1. every line is UTF-8 JSON in the export's exact form, ending in a newline;
      2. a line is either an entry with exactly the entry fields, or the checkpoint line;
      3. entries' leaf indexes run 0, 1, 2, … (a jump: a line was deleted or moved; a repeat: one was
         inserted or duplicated);
      4. each record hashes to its leaf hash and each entry links to the one before (`verify_entry`);
      5. the leaf hashes build the RFC 6962 root as they stream past;
      6. the checkpoint line is present, and it is the last line;
      7. the checkpoint's signature verifies under `verifier` (and its origin is `origin`, when given);
      8. its tree size is the number of entries;
      9. its root hash is the root built in step 5.
    """
    builder = merkle.RootBuilder()
    prev = GENESIS
    last_line = 0
    signed: tuple[int, Checkpoint] | None = None
    for number, raw in enumerate(lines, start=1):
        last_line = number
        # Step 6, in part: the checkpoint closes the export.
        if signed is not None:
            raise _tampered(number, None, f"a line follows the checkpoint on line {signed[0]}: it was added")
        # Step 1.
        item = _parse_line(number, raw)
        # Step 2.
        if list(item) == ["checkpoint"]:
            # Step 7.
            signed = number, _checkpoint(number, item["checkpoint"], verifier, origin=origin)
            continue
        leaf, prev = _check_entry(number, item, expected_index=builder.size, expected_prev=prev)
        # Step 5.
        builder.push(leaf)
    # Step 6.
    if signed is None:
        raise _tampered(
            last_line + 1,
            None,
            f"no checkpoint: the export ends after line {last_line} without its checkpoint line "
            "(the file was truncated or its last line removed)",
        )
    number, checkpoint = signed
    # Step 8.
    if checkpoint.tree_size > builder.size:
        missing = checkpoint.tree_size - builder.size
        raise _tampered(
            number,
            None,
            f"the checkpoint covers {checkpoint.tree_size} entries, the export holds {builder.size}: "
            f"the last {missing} entry line(s) were deleted (leaf {builder.size} should be on line {number})",
        )
    if checkpoint.tree_size < builder.size:
        raise _tampered(
            number,
            None,
            f"the checkpoint covers {checkpoint.tree_size} entries, the export holds {builder.size}: "
            f"the lines from line {checkpoint.tree_size + 1} on were added",
        )
    # Step 9.
    if checkpoint.root_hash != builder.root():
        raise _tampered(
            number,
            None,
            "the entries' Merkle root differs from the signed checkpoint's: entries were altered",
        )
    return ExportReport(entries=builder.size, checkpoint=checkpoint)


def _parse_line(number: int, raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _tampered(number, None, "the line is not UTF-8: it was edited") from None
    if not raw.endswith("\n"):
        raise _tampered(number, None, "the line does not end in a newline: the file was truncated or edited")
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError):
        raise _tampered(number, None, "the line is not valid JSON: it was edited") from None
    if not isinstance(item, dict):
        raise _tampered(number, None, "the line is not a JSON object: it was edited")
    try:
        exact = _dumps(item) == raw
    except ValueError:  # NaN or an infinity, which an export never holds
        exact = False
    if not exact:
        raise _tampered(number, _entry_id(item), "the line is not in the export's exact form: it was edited")
    return item


def _check_entry(
    number: int, item: dict[str, Any], *, expected_index: int, expected_prev: bytes
) -> tuple[bytes, bytes]:
    """Steps 2 to 4 for one entry line; returns its leaf hash and entry hash."""
    entry_id = _entry_id(item)
    # Step 2: the entry's fields.
    if list(item) != list(ENTRY_FIELDS) or not isinstance(item["record"], dict):
        raise _tampered(
            number, entry_id, f"the line is neither an entry ({', '.join(ENTRY_FIELDS)}) nor the checkpoint"
        )
    index = item["leaf_index"]
    if type(index) is not int:
        raise _tampered(number, entry_id, f"leaf_index {index!r} is not an integer")
    # Step 3: the entry's place.
    if index > expected_index:
        raise _tampered(
            number,
            entry_id,
            f"leaf_index is {index}, expected {expected_index}: the line of leaf {expected_index} "
            "was deleted or moved",
        )
    if index < expected_index:
        raise _tampered(
            number,
            entry_id,
            f"leaf_index is {index}, expected {expected_index}: leaf {index} came before, "
            "so this line was inserted, duplicated or moved",
        )
    # Step 4: record, leaf and link.
    try:
        hashes = {name: from_hex(item[name], field=name) for name in ENTRY_FIELDS[2:]}
        verify_entry(
            item["record"],
            leaf_index=index,
            expected_index=expected_index,
            expected_prev=expected_prev,
            **hashes,
        )
    except InvalidRequest as exc:
        raise _tampered(number, entry_id, exc.message) from None
    except ChainError as exc:
        raise _tampered(number, entry_id, exc.reason) from None
    return hashes["leaf_hash"], hashes["entry_hash"]


def _checkpoint(number: int, note: Any, verifier: Verifier, *, origin: str | None) -> Checkpoint:
    if not isinstance(note, str):
        raise _tampered(number, None, "the checkpoint line does not hold a signed note")
    try:
        return parse_checkpoint(note, verifier, origin=origin)
    except CheckpointError as exc:
        raise _tampered(number, None, f"the checkpoint does not verify: {exc.reason}") from None


def _entry_id(item: dict[str, Any]) -> str | None:
    """The entry id to name in an error, if it has an id's shape (the file may hold any text)."""
    record = item.get("record")
    entry_id = record.get("entry_id") if isinstance(record, dict) else None
    return entry_id if isinstance(entry_id, str) and _ID.fullmatch(entry_id) else None


def _tampered(line: int, entry_id: str | None, reason: str) -> LedgerTampered:
    where = f"line {line}" if entry_id is None else f"line {line} ({entry_id})"
    return LedgerTampered(f"{where}: {reason}", line=line, entry_id=entry_id)
