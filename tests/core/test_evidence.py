"""The compliance evidence pack: signed over its canonical JSON, verified with the log's public key alone, and
any change to a number, a byte or a line of either form is refused with the place it is in."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir.core import evidence as ev
from haldir.core import evidence_facts as facts
from haldir.core.checkpoints import (
    Checkpoint,
    CheckpointError,
    generate_signer,
    open_note,
    sign_checkpoint,
    sign_note,
)
from haldir.core.evidence_markdown import render_markdown
from haldir.core.keys import ApiKey
from haldir.errors import EvidenceTampered

SIGNER = generate_signer("haldir.test")
ORIGIN = "haldir.test/acme"
START = datetime(2026, 1, 1, tzinfo=UTC)
LATER = START + timedelta(days=90)


def sample_evidence(*, entries: int = 3) -> facts.Evidence:
    note = sign_checkpoint(Checkpoint(ORIGIN, entries, b"\x01" * 32), SIGNER)
    keys = [
        ApiKey("acme", "hld_Admin123", "admin | ops", frozenset({"*"}), START),
        ApiKey("acme", "hld_Reader12", "ci_<bot>", frozenset({"audit:read", "admin:read"}), START, LATER),
    ]
    return facts.Evidence(
        identity=facts.Identity("acme", START, ORIGIN, START, LATER, LATER, "haldir 0.1.0"),
        access_control=facts.access_control(keys, since=START, until=LATER + timedelta(seconds=1)),
        encryption=facts.Encryption(
            facts.SECRET_CIPHER,
            facts.AAD_BINDS,
            facts.KEY_WRAPPING,
            facts.VALUE_DIGEST,
            2,
            1,
            START,
            START,
            2,
            3,
            0,
            (facts.MasterKeyFact(1, "ab" * 16, START), facts.MasterKeyFact(2, "cd" * 16, START)),
            (facts.DataKeyFact(1, 2, START),),
        ),
        audit_trail=facts.AuditTrail(
            entries,
            0,
            entries - 1,
            1,
            1,
            entries,
            "01" * 32,
            START,
            facts.INTEGRITY_CHECKS,
            True,
            entries,
            None,
            note,
        ),
        spend_governance=facts.SpendGovernance(
            "USD",
            2,
            1,
            Decimal("50.00"),
            Decimal("47.30"),
            Decimal("47.30"),
            1,
            Decimal("1.00"),
            2,
            Decimal("12.50"),
            1,
            Decimal("3.000001"),
            1,
            Decimal("0.50"),
            4,
        ),
        human_approvals=facts.HumanApprovals(
            5, 1, 1, 1, 1, 1, (facts.RuleFact("arl_1", "spend_over", Decimal("100.00"), None, None, START),)
        ),
        outbound_alerting=facts.OutboundAlerting(
            1,
            1,
            3,
            2,
            1,
            0,
            4,
            facts.success_percent(2, 1),
            (facts.WebhookFact("whk_1", "https://hooks.example", ("*",), True, START),),
        ),
    )


PACK = ev.sign_evidence(sample_evidence(), SIGNER)
JSON_DOC = ev.render_json(PACK)
MARKDOWN_DOC = render_markdown(PACK)


def _numbers(pack: dict[str, Any]) -> Iterator[tuple[int, str, Any]]:
    """(section, field path, value) of every number of sections 1-7: counts and amounts."""
    for section in pack["sections"]:
        for path, value in ev._leaves(section["facts"], ""):
            if (type(value) is int) or (isinstance(value, str) and facts._DECIMAL.fullmatch(value)):
                yield section["section"], path, value


NUMBERS = list(_numbers(PACK))


def _set(facts: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.replace("]", "").replace("[", ".").split(".")
    target: Any = facts
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value


def test_every_section_carries_the_soc2_criterion_of_the_seed_table() -> None:
    criteria = [(s["section"], s["title"], s["criterion"]) for s in PACK["sections"]]
    signature = PACK["signature"]
    assert [*criteria, (signature["section"], signature["title"], signature["criterion"])] == [
        (1, "Identity", None),
        (2, "Access control", "CC6.1"),
        (3, "Encryption", "CC6.7"),
        (4, "Audit trail", "CC7.2"),
        (5, "Spend governance", "CC5.2"),
        (6, "Human approvals", "CC8.1"),
        (7, "Outbound alerting", "CC7.3"),
        (8, "Document signature", None),
    ]


def test_a_pack_verifies_in_both_forms_with_the_log_public_key_alone() -> None:
    verifier = SIGNER.verifier
    from_json = ev.verify_evidence(JSON_DOC.encode(), verifier)
    from_markdown = ev.verify_evidence(MARKDOWN_DOC, verifier)
    assert from_json.digest == from_markdown.digest == PACK["signature"]["digest"]
    assert from_json.checkpoint.tree_size == 3
    assert from_json.tenant_id == "acme"
    assert (from_json.period_since, from_json.period_until) == (START, LATER)


def test_the_digest_is_sha256_of_the_canonical_json_of_sections_one_to_seven() -> None:
    body = json.dumps(
        {"format": ev.FORMAT, "sections": PACK["sections"]},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert hashlib.sha256(body).hexdigest() == PACK["signature"]["digest"]
    assert ev.canonical(PACK).decode() + "\n" == JSON_DOC


def test_money_travels_as_decimal_strings_and_a_float_is_refused() -> None:
    spend = PACK["sections"][4]["facts"]
    assert spend["spend_caps_usd"] == "50.00"
    assert spend["payments_voided_usd"] == "3.000001"
    floated = JSON_DOC.replace('"spend_caps_usd":"50.00"', '"spend_caps_usd":50.0')
    with pytest.raises(EvidenceTampered, match="floating-point"):
        ev.verify_evidence(floated, SIGNER.verifier)


@given(st.sampled_from(NUMBERS), st.integers(min_value=1, max_value=10**6))
def test_any_changed_number_in_the_json_fails_and_names_its_section_and_field(
    number: tuple[int, str, Any], delta: int
) -> None:
    section, path, value = number
    pack = json.loads(JSON_DOC)
    changed = value + delta if type(value) is int else str(Decimal(value) + delta)
    _set(pack["sections"][section - 1]["facts"], path, changed)
    with pytest.raises(EvidenceTampered) as raised:
        ev.verify_evidence(ev.render_json(pack), SIGNER.verifier)
    assert raised.value.details == {"section": section, "field": path}
    assert f"section {section} (" in raised.value.message
    assert f"field {path}" in raised.value.message


@given(st.data())
def test_any_changed_byte_of_the_json_file_fails(data: st.DataObject) -> None:
    raw = bytearray(JSON_DOC.encode())
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != raw[index]))
    with pytest.raises(EvidenceTampered):
        ev.verify_evidence(bytes(raw), SIGNER.verifier)


@given(st.data())
def test_any_changed_byte_of_the_markdown_file_fails(data: st.DataObject) -> None:
    raw = bytearray(MARKDOWN_DOC.encode())
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != raw[index]))
    with pytest.raises(EvidenceTampered):
        ev.verify_evidence(bytes(raw), SIGNER.verifier)


@given(st.sampled_from(NUMBERS), st.integers(min_value=1, max_value=10**6))
def test_any_number_changed_in_the_markdown_signed_block_names_its_section_and_field(
    number: tuple[int, str, Any], delta: int
) -> None:
    section, path, value = number
    pack = json.loads(JSON_DOC)
    _set(pack["sections"][section - 1]["facts"], path, value + delta if type(value) is int else "9" + value)
    block = ev.canonical(pack).decode()
    edited = MARKDOWN_DOC.replace(ev.canonical(PACK).decode(), block)
    with pytest.raises(EvidenceTampered) as raised:
        ev.verify_evidence(edited, SIGNER.verifier)
    assert raised.value.details == {"section": section, "field": path}


def test_a_number_edited_in_the_markdown_text_names_its_section_line_and_row() -> None:
    edited = MARKDOWN_DOC.replace("| Entries in period | 3 |", "| Entries in period | 4 |")
    line = MARKDOWN_DOC.split("\n").index("| Entries in period | 3 |") + 1
    with pytest.raises(EvidenceTampered) as raised:
        ev.verify_evidence(edited, SIGNER.verifier)
    assert raised.value.details == {"section": 4, "field": "Entries in period", "line": line}
    assert "section 4 (Audit trail, CC7.2)" in raised.value.message
    assert "'| Entries in period | 4 |'" in raised.value.message


NUMBER_ROWS = [
    (index, line)
    for index, line in enumerate(MARKDOWN_DOC.split("\n"))
    if re.fullmatch(r"\| [^|]+ \| [0-9][0-9,.]* \|", line)
]


@given(st.sampled_from(NUMBER_ROWS), st.integers(min_value=1, max_value=9))
def test_any_number_edited_in_the_markdown_text_names_its_line_and_section(
    row: tuple[int, str], digit: int
) -> None:
    index, line = row
    label, value = line[2:-2].split(" | ")
    edited_value = str(digit) + value  # a different number, as a person would type it
    lines = MARKDOWN_DOC.split("\n")
    lines[index] = f"| {label} | {edited_value} |"
    with pytest.raises(EvidenceTampered) as raised:
        ev.verify_evidence("\n".join(lines), SIGNER.verifier)
    assert raised.value.details["line"] == index + 1
    assert raised.value.details["field"] == label
    heading = next(h for h in reversed(MARKDOWN_DOC.split("\n")[:index]) if h.startswith("## "))
    assert raised.value.details["section"] == int(heading[3])


def test_markdown_escapes_key_names_so_a_table_cannot_be_broken() -> None:
    assert "| admin \\| ops |" in MARKDOWN_DOC
    assert "ci\\_\\<bot\\>" in MARKDOWN_DOC


def test_a_markdown_file_cut_before_its_signed_block_is_refused() -> None:
    cut = MARKDOWN_DOC[: MARKDOWN_DOC.index("## Signed pack")]
    with pytest.raises(EvidenceTampered, match="signed JSON block"):
        ev.verify_evidence(cut, SIGNER.verifier)


def test_another_log_key_is_refused_and_named() -> None:
    other = generate_signer("haldir.test")
    with pytest.raises(EvidenceTampered) as raised:
        ev.verify_evidence(JSON_DOC, other.verifier)
    assert raised.value.details == {"section": 8, "field": "key"}


def test_a_pack_resigned_by_another_key_under_the_same_name_does_not_verify() -> None:
    other = generate_signer("haldir.test")
    forged = json.loads(JSON_DOC)
    forged["signature"]["signature"] = ev.sign_evidence(sample_evidence(), other)["signature"]["signature"]
    with pytest.raises(EvidenceTampered) as raised:
        ev.verify_evidence(ev.render_json(forged), SIGNER.verifier)
    assert raised.value.details == {"section": 8, "field": "signature"}


def test_a_checkpoint_of_another_log_in_the_pack_is_refused() -> None:
    evidence = sample_evidence()
    other = sign_checkpoint(Checkpoint("haldir.test/other", 3, b"\x01" * 32), SIGNER)
    audit = dataclasses.replace(evidence.audit_trail, checkpoint=other)
    pack = ev.sign_evidence(dataclasses.replace(evidence, audit_trail=audit), SIGNER)
    with pytest.raises(EvidenceTampered) as raised:
        ev.verify_evidence(ev.render_json(pack), SIGNER.verifier)
    assert raised.value.details == {"section": 4, "field": "checkpoint"}


def test_the_signed_message_can_never_be_a_signed_note() -> None:
    message = ev.SIGNING_CONTEXT + bytes.fromhex(PACK["signature"]["digest"])
    with pytest.raises(CheckpointError):
        sign_note(message.decode("utf-8", "replace") + "\n", SIGNER)
    forged = message.decode("latin-1") + "\n\n— haldir.test " + "AAAA" + "\n"
    with pytest.raises(CheckpointError):
        open_note(forged, SIGNER.verifier)


def test_a_changed_field_locator_is_refused_as_a_change_to_section_eight() -> None:
    pack = json.loads(JSON_DOC)
    pack["signature"]["section_digests"][3]["fields"]["entries_in_period"] = "0" * 16
    with pytest.raises(EvidenceTampered) as raised:
        ev.verify_evidence(ev.render_json(pack), SIGNER.verifier)
    assert raised.value.details == {"section": 8, "field": "section_digests[3].fields.entries_in_period"}


def test_key_counts_come_from_the_keys_themselves() -> None:
    facts = PACK["sections"][1]["facts"]
    assert (facts["keys_total"], facts["keys_active"], facts["keys_revoked"]) == (2, 1, 1)
    assert facts["keys_active_with_all_scopes"] == 1
    assert facts["keys"][1]["scopes"] == ["admin:read", "audit:read"]
    assert "key_hash" not in json.dumps(facts)


def test_success_percent_is_of_finished_deliveries_and_none_without_any() -> None:
    assert facts.success_percent(0, 0) is None
    assert facts.success_percent(541, 1) == Decimal("99.82")
    assert facts.success_percent(2, 0) == Decimal("100.00")


def test_budget_refusals_are_recognised_by_the_reasons_the_budget_gives() -> None:
    assert facts.is_budget_refusal("session ses_1 has 0.50 USD of budget left, less than 1.00")
    assert facts.is_budget_refusal("Spend limit of 5.00 USD per agent (pol_1) would be exceeded by 1.00 USD")
    assert not facts.is_budget_refusal("session ses_1 lacks scope 'spend'; it has ['read']")
    assert not facts.is_budget_refusal(None)
