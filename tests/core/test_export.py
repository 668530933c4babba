"""Offline verification of JSONL exports: a faithful one verifies, and every way of changing it is named."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir.core.checkpoints import Checkpoint, Signer, generate_signer, sign_checkpoint
from haldir.core.export import (
    CSV_COLUMNS,
    ENTRY_FIELDS,
    ExportReport,
    checkpoint_line,
    csv_row,
    entry_line,
    verify_export,
)
from haldir.core.ledger import audit_record, chain, hash_entry, hash_leaf
from haldir.core.merkle import RootBuilder
from haldir.errors import LedgerTampered

NAME = "haldir.test"
ORIGIN = f"{NAME}/acme"
SIGNER = generate_signer(NAME)
START = datetime(2026, 4, 5, 19, 0, 0, tzinfo=UTC)


def _records(count: int) -> list[dict[str, Any]]:
    return [
        audit_record(
            entry_id=f"aud_entry{i}",
            tenant_id="acme",
            session_id="ses_one",
            agent_id="agent-7",
            tool="stripe",
            action="charge",
            status="ok",
            cost_usd="29.99",
            details={"charge": f"ch_{i}", "temperature": 0.7, "note": "caf\u00e9 \u2014 \u2028"},
            flagged=False,
            flag_reason=None,
            timestamp=START + timedelta(seconds=i),
        )
        for i in range(count)
    ]


def _entries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "record": record,
            "leaf_index": link.leaf_index,
            "leaf_hash": link.leaf_hash.hex(),
            "prev_hash": link.prev_hash.hex(),
            "entry_hash": link.entry_hash.hex(),
        }
        for record, link in zip(records, chain(records), strict=True)
    ]


def _note(entries: list[dict[str, Any]], *, signer: Signer = SIGNER, origin: str = ORIGIN) -> str:
    builder = RootBuilder()
    for entry in entries:
        builder.push(bytes.fromhex(entry["leaf_hash"]))
    return sign_checkpoint(Checkpoint(origin, builder.size, builder.root()), signer)


def _export(count: int = 6) -> list[str]:
    entries = _entries(_records(count))
    return [*map(entry_line, entries), checkpoint_line(_note(entries))]


def _verify(lines: list[str]) -> ExportReport:
    return verify_export(lines, SIGNER.verifier, origin=ORIGIN)


def _fails(lines: list[str], *, line: int, entry_id: str | None = None, says: str = "") -> LedgerTampered:
    with pytest.raises(LedgerTampered) as caught:
        _verify(lines)
    error = caught.value
    assert error.details["line"] == line, error.message
    assert error.details["entry_id"] == entry_id, error.message
    assert error.message.startswith(f"line {line}")
    assert says in error.message
    return error


def _edit(line: str, change: Any) -> str:
    item = json.loads(line)
    change(item)
    return entry_line(item)


def test_a_faithful_export_verifies_with_the_log_key_alone() -> None:
    report = _verify(_export(6))
    assert report.entries == 6
    assert (report.checkpoint.origin, report.checkpoint.tree_size) == (ORIGIN, 6)


def test_every_line_is_ascii_json_in_one_exact_form() -> None:
    lines = _export(3)
    assert all(line.isascii() and line.endswith("\n") and line.count("\n") == 1 for line in lines)
    assert list(json.loads(lines[0])) == list(ENTRY_FIELDS)
    assert list(json.loads(lines[-1])) == ["checkpoint"]


def test_an_empty_log_exports_as_its_checkpoint_alone() -> None:
    report = _verify([checkpoint_line(_note([]))])
    assert (report.entries, report.checkpoint.tree_size) == (0, 0)


def test_the_origin_is_not_checked_unless_asked_for() -> None:
    lines = _export(2)
    assert verify_export(lines, SIGNER.verifier).checkpoint.origin == ORIGIN
    with pytest.raises(LedgerTampered, match="origin"):
        verify_export(lines, SIGNER.verifier, origin=f"{NAME}/other")


def test_binary_lines_verify_like_text_lines() -> None:
    data = "".join(_export(3)).encode()
    assert verify_export(io.BytesIO(data), SIGNER.verifier).entries == 3


def test_editing_a_record_names_its_line_and_entry() -> None:
    lines = _export()
    lines[2] = _edit(lines[2], lambda item: item["record"].update(cost_usd="19.99"))
    _fails(lines, line=3, entry_id="aud_entry2", says="record was changed")


@pytest.mark.parametrize("field", ["leaf_hash", "prev_hash", "entry_hash"])
def test_editing_a_hash_names_its_line(field: str) -> None:
    lines = _export()
    lines[3] = _edit(lines[3], lambda item: item.update({field: "ab" * 32}))
    _fails(lines, line=4, entry_id="aud_entry3")


def test_renumbering_a_line_names_it() -> None:
    lines = _export()
    lines[1] = _edit(lines[1], lambda item: item.update(leaf_index=7))
    _fails(lines, line=2, entry_id="aud_entry1", says="leaf_index is 7, expected 1")


def test_a_reformatted_line_is_an_edit_even_when_its_meaning_is_the_same() -> None:
    lines = _export()
    lines[1] = json.dumps(json.loads(lines[1])) + "\n"
    _fails(lines, line=2, entry_id="aud_entry1", says="exact form")


def test_inserting_a_copy_of_a_line_names_the_copy() -> None:
    lines = _export()
    lines.insert(4, lines[1])
    _fails(lines, line=5, entry_id="aud_entry1", says="inserted, duplicated or moved")


def test_inserting_a_forged_entry_that_links_correctly_names_the_line_it_displaced() -> None:
    lines = _export()
    before = json.loads(lines[2])
    record = {**before["record"], "entry_id": "aud_forged", "cost_usd": "0.01"}
    leaf = hash_leaf(record)
    prev = bytes.fromhex(before["entry_hash"])
    forged = {
        "record": record,
        "leaf_index": 3,
        "leaf_hash": leaf.hex(),
        "prev_hash": prev.hex(),
        "entry_hash": hash_entry(prev, leaf).hex(),
    }
    lines.insert(3, entry_line(forged))
    _fails(lines, line=5, entry_id="aud_entry3", says="leaf_index is 3, expected 4")


def test_swapping_two_lines_names_the_first_out_of_place() -> None:
    lines = _export()
    lines[2], lines[3] = lines[3], lines[2]
    _fails(lines, line=3, entry_id="aud_entry3", says="leaf 2 was deleted or moved")


def test_deleting_a_middle_line_names_the_gap() -> None:
    lines = _export()
    del lines[2]
    _fails(lines, line=3, entry_id="aud_entry3", says="leaf 2 was deleted or moved")


def test_deleting_the_first_line_names_the_gap() -> None:
    lines = _export()
    del lines[0]
    _fails(lines, line=1, entry_id="aud_entry1", says="expected 0")


def test_deleting_the_last_entry_line_disagrees_with_the_checkpoint() -> None:
    lines = _export(6)
    del lines[5]
    _fails(lines, line=6, says="covers 6 entries, the export holds 5")


def test_deleting_the_checkpoint_line_is_named() -> None:
    lines = _export(6)
    del lines[-1]
    _fails(lines, line=7, says="no checkpoint")


def test_an_empty_file_has_no_checkpoint() -> None:
    _fails([], line=1, says="no checkpoint")


def test_a_missing_final_newline_is_named() -> None:
    lines = _export(2)
    lines[-1] = lines[-1].rstrip("\n")
    _fails(lines, line=3, says="newline")


def test_a_line_after_the_checkpoint_is_named() -> None:
    lines = _export(2)
    lines.append(lines[0])
    _fails(lines, line=4, says="follows the checkpoint")


def test_a_blank_line_is_named() -> None:
    lines = _export(3)
    lines.insert(1, "\n")
    _fails(lines, line=2, says="not valid JSON")


def test_a_rewritten_tail_with_a_consistent_chain_fails_at_the_checkpoint() -> None:
    records = _records(5)
    records[3] = {**records[3], "cost_usd": "0.01"}
    entries = _entries(records)  # every hash from leaf 3 on recomputed: the chain alone is consistent
    signed = _export(5)[-1]
    _fails([*map(entry_line, entries), signed], line=6, says="Merkle root differs")


def test_an_appended_entry_with_a_consistent_chain_disagrees_with_the_checkpoint() -> None:
    entries = _entries(_records(5))
    signed = checkpoint_line(_note(entries[:4]))
    _fails([*map(entry_line, entries), signed], line=6, says="covers 4 entries, the export holds 5")


def test_a_checkpoint_signed_by_another_key_with_the_same_name_fails() -> None:
    entries = _entries(_records(3))
    forged = checkpoint_line(_note(entries, signer=generate_signer(NAME)))
    _fails([*map(entry_line, entries), forged], line=4, says="does not verify")


def test_an_edited_checkpoint_fails() -> None:
    lines = _export(3)
    note = json.loads(lines[-1])["checkpoint"].replace("\n3\n", "\n2\n", 1)
    lines[-1] = checkpoint_line(note)
    _fails(lines, line=4, says="invalid signature")


def test_a_non_utf8_line_is_named() -> None:
    data = [line.encode() for line in _export(2)]
    data[1] = data[1].replace(b"stripe", b"str\xffpe")
    with pytest.raises(LedgerTampered, match="line 2: the line is not UTF-8"):
        verify_export(data, SIGNER.verifier)


def test_a_hostile_entry_id_is_not_echoed() -> None:
    lines = _export(2)
    lines[0] = _edit(lines[0], lambda item: item["record"].update(entry_id="\x1b[31m[bold]evil"))
    _fails(lines, line=1, entry_id=None, says="record was changed")


EXPORT = "".join(_export(4)).encode()


@given(
    position=st.integers(min_value=0, max_value=len(EXPORT)),
    kind=st.sampled_from(["replace", "insert", "delete"]),
    byte=st.integers(min_value=0, max_value=255),
)
def test_any_single_byte_edit_is_detected_and_names_its_line(position: int, kind: str, byte: int) -> None:
    data = bytearray(EXPORT)
    if kind == "insert":
        data.insert(position, byte)
    elif position == len(data):
        return
    elif kind == "delete":
        del data[position]
    elif data[position] == byte:
        return
    else:
        data[position] = byte
    line = EXPORT[:position].count(b"\n") + 1
    with pytest.raises(LedgerTampered) as caught:
        verify_export(io.BytesIO(bytes(data)), SIGNER.verifier, origin=ORIGIN)
    assert caught.value.details["line"] == line, caught.value.message


def test_csv_rows_follow_the_columns_and_disarm_formulas() -> None:
    entry = _entries(_records(1))[0]
    entry["record"] = {**entry["record"], "tool": "=HYPERLINK(1)", "flag_reason": None}
    row = dict(zip(CSV_COLUMNS, csv_row(entry), strict=True))
    assert row["leaf_index"] == "0"
    assert row["entry_id"] == "aud_entry0"
    assert row["tool"] == "'=HYPERLINK(1)"
    assert (row["flagged"], row["flag_reason"], row["cost_usd"]) == ("false", "", "29.99")
    assert json.loads(row["details"])["charge"] == "ch_0"
    assert row["entry_hash"] == entry["entry_hash"]
