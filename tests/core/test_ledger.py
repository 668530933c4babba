"""Ledger encoding: canonical record bytes, leaf and entry hashes, chain verification, audit records."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import rfc8785
from hypothesis import assume, given
from hypothesis import strategies as st

from haldir.core.ledger import (
    GENESIS,
    ChainError,
    ChainLink,
    audit_record,
    canonical_bytes,
    chain,
    draft_entry,
    from_hex,
    hash_entry,
    hash_leaf,
    timestamp_text,
    to_hex,
    verify_entry,
)
from haldir.errors import InvalidRequest

SAFE_INT = 2**53 - 1

json_scalars = st.none() | st.booleans() | st.integers(-SAFE_INT, SAFE_INT) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
records = st.dictionaries(st.text(max_size=12), json_values, max_size=8)


def _same_json(a: Any, b: Any) -> bool:
    """Type-aware JSON equality by an independent serializer (Python's `True == 1`, JSON's does not)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _verify_all(entries: list[tuple[dict[str, Any], ChainLink]]) -> None:
    """What an offline verifier does with an export: walk from GENESIS, each entry linking to the last."""
    prev = GENESIS
    for index, (record, link) in enumerate(entries):
        verify_entry(
            record,
            leaf_index=link.leaf_index,
            leaf_hash=link.leaf_hash,
            prev_hash=link.prev_hash,
            entry_hash=link.entry_hash,
            expected_prev=prev,
            expected_index=index,
        )
        prev = link.entry_hash


def _verify(record: dict[str, Any], link: ChainLink, *, expected_prev: bytes) -> None:
    verify_entry(
        record,
        leaf_index=link.leaf_index,
        leaf_hash=link.leaf_hash,
        prev_hash=link.prev_hash,
        entry_hash=link.entry_hash,
        expected_prev=expected_prev,
    )


def _record(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "entry_id": "aud_1",
        "tenant_id": "acme",
        "session_id": "ses_1",
        "agent_id": "agent-7",
        "tool": "stripe",
        "action": "charge",
        "status": "ok",
        "cost_usd": "2.50",
        "details": {"customer": "cus_1"},
        "flagged": False,
        "flag_reason": None,
        "timestamp": datetime(2026, 4, 5, 19, 0, tzinfo=UTC),
    }
    fields.update(changes)
    return audit_record(**fields)


def test_canonical_bytes_sort_keys_and_encode_utf8_without_escaping() -> None:
    assert canonical_bytes({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert canonical_bytes({"b": 1, "a": "é"}) == b'{"a":"\xc3\xa9","b":1}'


@given(record=records, seed=st.randoms(use_true_random=False))
def test_canonical_bytes_do_not_depend_on_key_order(record: dict[str, Any], seed: Any) -> None:
    items = list(record.items())
    seed.shuffle(items)
    assert canonical_bytes(dict(items)) == canonical_bytes(record)


# Known answers from cyberphone/json-canonicalization testdata (the RFC 8785 author's reference suite).
@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(  # testdata/{input,output}/weird.json: keys sort by UTF-16 code units, not code points
            {
                "\u20ac": "Euro Sign",
                "1": "One",
                "\u0080": "Control\u007f",
                "\U0001f602": "Smiley",
                "\u00f6": "Latin Small Letter O With Diaeresis",
                "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "</script>": "Browser Challenge",
            },
            '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f",'
            '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign","\U0001f602":"Smiley",'
            '"\ufb33":"Hebrew Letter Dalet With Dagesh"}',
            id="weird",
        ),
        pytest.param(  # testdata/{input,output}/french.json: no locale collation
            {
                "peach": "This sorting order",
                "péché": "is wrong according to French",
                "pêche": "but canonicalization MUST",
                "sin": "ingnore locale",
            },
            '{"peach":"This sorting order","péché":"is wrong according to French",'
            '"pêche":"but canonicalization MUST","sin":"ingnore locale"}',
            id="french",
        ),
        pytest.param(  # testdata/{input,output}/unicode.json: no Unicode normalization
            {"Unnormalized Unicode": "\u1e0d\u0307"},
            '{"Unnormalized Unicode":"\u1e0d\u0307"}',
            id="unicode",
        ),
        pytest.param(  # README sample without its float array: string escaping and literals
            {"escaping": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/", "other": [None, True, False]},
            '{"escaping":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/","other":[null,true,false]}',
            id="escaping",
        ),
        pytest.param(  # testdata structures.json, with its one float 56.0 written as the integer 56
            {"1": {"f": {"f": "hi", "F": 5}, "\n": 56}, "10": {}, "": "empty", "a": {}, "111": [{}], "A": {}},
            '{"":"empty","1":{"\\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{}],"A":{},"a":{}}',
            id="structures",
        ),
    ],
)
def test_canonical_bytes_match_published_rfc8785_vectors(record: dict[str, Any], expected: str) -> None:
    assert canonical_bytes(record) == expected.encode("utf-8")


def test_escaping_vector_has_the_published_bytes() -> None:
    published = (
        "7b 22 65 73 63 61 70 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30 30 66 5c 6e 41 27 42 5c 22 5c 5c"
        " 5c 5c 5c 22 2f 22"
    )
    record = {"escaping": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/"}
    assert canonical_bytes(record) == bytes.fromhex(published) + b"}"


@pytest.mark.parametrize(
    "record",
    [
        {"amount": float("nan")},
        {"details": {"nested": [1, 2, {"deep": float("inf")}]}},
        {"list": [1, (2, float("-inf"))]},
    ],
)
def test_nan_and_infinities_anywhere_in_a_record_are_refused(record: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="NaN or infinities"):
        canonical_bytes(record)
    with pytest.raises(InvalidRequest, match="NaN or infinities"):
        hash_leaf(record)


def test_finite_floats_serialise_as_rfc_8785_prescribes() -> None:
    assert (
        canonical_bytes({"t": 0.7, "n": 2.0, "e": 1e21, "s": 1e-7}) == b'{"e":1e+21,"n":2,"s":1e-7,"t":0.7}'
    )


def test_refusal_names_where_the_bad_number_is() -> None:
    with pytest.raises(InvalidRequest) as caught:
        canonical_bytes({"details": {"prices": [1, float("nan")]}})
    assert caught.value.details == {"field": "record.details.prices[1]"}


@pytest.mark.parametrize(
    "record",
    [
        {"n": 2**53},
        {"n": -(2**53)},
        {"d": Decimal("1.5")},
        {"b": b"bytes"},
        {"s": "\ud800"},
        {"\udc00": "a lone surrogate in a key"},
        {1: "non-string key"},
    ],
)
def test_values_outside_plain_json_are_refused(record: dict[Any, Any]) -> None:
    with pytest.raises(InvalidRequest, match="plain JSON"):
        canonical_bytes(record)


# Any text, including non-BMP characters, U+E000..U+FFFF (which sort differently by UTF-16 code unit) and
# lone surrogates (refused): the fast path must agree with the reference implementation on all of it.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=10)
wide_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=16,
)


def _reference(record: dict[str, Any]) -> bytes | str:
    try:
        return rfc8785.dumps(record)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):  # the latter: a lone surrogate in a key
        return "refused"


def _ours(record: dict[str, Any]) -> bytes | str:
    try:
        return canonical_bytes(record)
    except InvalidRequest:
        return "refused"


@given(st.dictionaries(any_text, wide_values, max_size=6))
def test_canonical_bytes_equal_the_reference_rfc_8785_implementation_byte_for_byte(
    record: dict[str, Any],
) -> None:
    assert _ours(record) == _reference(record)


@pytest.mark.parametrize(
    "record",
    [
        {"\ue000": 1, "\U0001f600": 2},  # code point order and UTF-16 order disagree on these two keys
        {"a": '\U0001f600\u2028\x7f\x00\x1f"\\/'},
        {"n": 2**53 - 1, "m": -(2**53 - 1), "z": 0},
        {"deep": json.loads("[" * 300 + "]" * 300)},  # deeper than orjson nests
    ],
)
def test_canonical_bytes_agree_with_the_reference_at_the_edges(record: dict[str, Any]) -> None:
    assert canonical_bytes(record) == rfc8785.dumps(record)


def test_a_cyclic_record_is_refused_not_walked_forever() -> None:
    record: dict[str, Any] = {"a": []}
    record["a"].append(record)
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        canonical_bytes(record)


@pytest.mark.parametrize("record", [[1, 2], "text", None, 5])
def test_a_record_must_be_a_json_object(record: Any) -> None:
    with pytest.raises(InvalidRequest, match="JSON object"):
        canonical_bytes(record)


def test_leaf_hash_is_sha256_of_zero_byte_and_canonical_bytes() -> None:
    record = {"b": 1, "a": "é"}
    assert hash_leaf(record) == hashlib.sha256(b'\x00{"a":"\xc3\xa9","b":1}').digest()


def test_entry_hash_is_sha256_of_previous_entry_hash_and_leaf_hash() -> None:
    prev, leaf = bytes(range(32)), bytes(range(32, 64))
    assert hash_entry(prev, leaf) == hashlib.sha256(prev + leaf).digest()


@pytest.mark.parametrize(("prev", "leaf"), [(b"", bytes(32)), (bytes(32), bytes(31)), (bytes(33), bytes(32))])
def test_entry_hash_refuses_hashes_that_are_not_32_bytes(prev: bytes, leaf: bytes) -> None:
    with pytest.raises(ValueError, match="32-byte hash"):
        hash_entry(prev, leaf)


def test_hashes_travel_as_lowercase_hex_and_back() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert to_hex(digest) == digest.hex()
    assert from_hex(to_hex(digest)) == digest


@pytest.mark.parametrize(
    "text", ["", "ab", "A" * 64, "g" * 64, "0" * 63, "0" * 65, " " + "0" * 63, "0x" + "0" * 62]
)
def test_from_hex_refuses_anything_but_64_lowercase_hex_characters(text: str) -> None:
    with pytest.raises(InvalidRequest, match="64 lowercase hex characters"):
        from_hex(text, field="prev_hash")


def test_from_hex_names_its_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        from_hex("nope", field="root_hash")
    assert caught.value.message.startswith("root_hash must be")
    assert caught.value.details == {"field": "root_hash"}


@given(entries=st.lists(records, min_size=1, max_size=8))
def test_chain_links_each_entry_to_the_one_before_starting_from_32_zero_bytes(
    entries: list[dict[str, Any]],
) -> None:
    links = chain(entries)
    assert bytes(32) == GENESIS
    assert links[0].prev_hash == GENESIS
    for index, (record, link) in enumerate(zip(entries, links, strict=True)):
        assert link.leaf_index == index
        assert link.leaf_hash == hashlib.sha256(b"\x00" + canonical_bytes(record)).digest()
        assert link.entry_hash == hashlib.sha256(link.prev_hash + link.leaf_hash).digest()
        if index:
            assert link.prev_hash == links[index - 1].entry_hash
    _verify_all(list(zip(entries, links, strict=True)))


@given(entries=st.lists(records, min_size=2, max_size=8), cut=st.integers(min_value=1, max_value=7))
def test_chain_continued_from_a_head_equals_the_chain_computed_in_one_go(
    entries: list[dict[str, Any]], cut: int
) -> None:
    cut = min(cut, len(entries) - 1)
    whole = chain(entries)
    head = chain(entries[:cut])
    tail = chain(entries[cut:], prev=head[-1].entry_hash, first_index=cut)
    assert head + tail == whole


def test_chain_of_nothing_is_empty() -> None:
    assert chain([]) == []


@pytest.mark.parametrize("prev", [b"", bytes(31), "00" * 32])
def test_chain_refuses_a_previous_hash_that_is_not_32_bytes(prev: Any) -> None:
    with pytest.raises(ValueError, match="32-byte hash"):
        chain([{"a": 1}], prev=prev)


def test_chain_refuses_a_negative_first_index() -> None:
    with pytest.raises(ValueError, match="first_index"):
        chain([{"a": 1}], first_index=-1)


def _mutations(record: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """One change to a record: a value replaced, a key added, removed or renamed."""
    keys = sorted(record)
    options: list[st.SearchStrategy[dict[str, Any]]] = [
        st.tuples(st.text(max_size=12), json_values).map(lambda kv: {**record, kv[0]: kv[1]}),
    ]
    if keys:
        options.append(
            st.tuples(st.sampled_from(keys), json_values).map(lambda kv: {**record, kv[0]: kv[1]}),
        )
        options.append(st.sampled_from(keys).map(lambda k: {key: v for key, v in record.items() if key != k}))
        options.append(
            st.tuples(st.sampled_from(keys), st.text(max_size=12)).map(
                lambda kn: {(kn[1] if key == kn[0] else key): v for key, v in record.items()}
            )
        )
    return st.one_of(options)


@given(data=st.data(), record=records)
def test_any_single_change_to_a_record_changes_its_leaf_hash_and_is_reported(
    data: st.DataObject, record: dict[str, Any]
) -> None:
    changed = data.draw(_mutations(record))
    assume(not _same_json(changed, record))
    assert hash_leaf(changed) != hash_leaf(record)
    (link,) = chain([record])
    with pytest.raises(ChainError, match="does not match its leaf_hash") as caught:
        _verify(changed, link, expected_prev=GENESIS)
    assert caught.value.reason == str(caught.value)
    assert to_hex(link.leaf_hash) in caught.value.reason


@given(data=st.data(), field=st.sampled_from(sorted(_record())))
def test_changing_any_field_of_an_audit_record_is_reported(data: st.DataObject, field: str) -> None:
    record = _record()
    changed = {**record, field: data.draw(json_values)}
    assume(not _same_json(changed, record))
    (link,) = chain([record])
    with pytest.raises(ChainError, match="entry 0: record does not match its leaf_hash"):
        _verify(changed, link, expected_prev=GENESIS)


@given(entries=st.lists(records, min_size=2, max_size=6, unique_by=lambda r: json.dumps(r, sort_keys=True)))
def test_swapping_two_entries_breaks_the_chain(entries: list[dict[str, Any]]) -> None:
    stored = list(zip(entries, chain(entries), strict=True))
    for i in range(len(stored)):
        for j in range(i + 1, len(stored)):
            swapped = list(stored)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            with pytest.raises(ChainError):
                _verify_all(swapped)


def test_swapping_two_records_but_keeping_the_chain_fields_is_reported_as_changed_records() -> None:
    entries = [{"n": 1}, {"n": 2}]
    links = chain(entries)
    with pytest.raises(ChainError, match="entry 0: record does not match its leaf_hash"):
        _verify_all([(entries[1], links[0]), (entries[0], links[1])])


def test_removing_an_entry_is_reported_as_a_broken_link() -> None:
    entries = [{"n": 1}, {"n": 2}, {"n": 3}]
    stored = list(zip(entries, chain(entries), strict=True))
    with pytest.raises(ChainError, match=r"entry 2: prev_hash .* does not match the previous entry hash"):
        verify_entry(
            stored[2][0],
            leaf_index=2,
            leaf_hash=stored[2][1].leaf_hash,
            prev_hash=stored[2][1].prev_hash,
            entry_hash=stored[2][1].entry_hash,
            expected_prev=stored[0][1].entry_hash,
        )


def test_a_forged_entry_hash_is_reported() -> None:
    (link,) = chain([{"n": 1}])
    with pytest.raises(ChainError, match=r"entry 0: entry_hash .* does not match SHA-256"):
        verify_entry(
            {"n": 1},
            leaf_index=0,
            leaf_hash=link.leaf_hash,
            prev_hash=GENESIS,
            entry_hash=bytes(32),
            expected_prev=GENESIS,
        )


def test_an_unexpected_leaf_index_is_reported() -> None:
    entries = [{"n": 1}, {"n": 2}]
    links = chain(entries)
    relabelled = ChainLink(5, links[1].leaf_hash, links[1].prev_hash, links[1].entry_hash)
    with pytest.raises(ChainError, match="entry 5: leaf_index is 5, expected 1"):
        _verify_all([(entries[0], links[0]), (entries[1], relabelled)])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"leaf_index": -1}, "malformed leaf_index"),
        ({"leaf_index": True}, "malformed leaf_index"),
        ({"leaf_hash": bytes(31)}, "leaf_hash is not a 32-byte hash"),
        ({"prev_hash": "00" * 32}, "prev_hash is not a 32-byte hash"),
        ({"entry_hash": b""}, "entry_hash is not a 32-byte hash"),
        ({"expected_prev": bytes(33)}, "expected_prev is not a 32-byte hash"),
    ],
)
def test_malformed_chain_fields_are_reported(changes: dict[str, Any], reason: str) -> None:
    (link,) = chain([{"n": 1}])
    fields: dict[str, Any] = {
        "leaf_index": 0,
        "leaf_hash": link.leaf_hash,
        "prev_hash": link.prev_hash,
        "entry_hash": link.entry_hash,
        "expected_prev": GENESIS,
        **changes,
    }
    with pytest.raises(ChainError, match=reason):
        verify_entry({"n": 1}, **fields)


def test_a_record_that_could_never_have_been_appended_is_reported_as_changed() -> None:
    (link,) = chain([{"price": "1.50"}])
    with pytest.raises(ChainError, match=r"cannot be canonicalized .*: it was changed"):
        _verify({"price": float("nan")}, link, expected_prev=GENESIS)


def test_chain_error_is_a_value_error_with_a_reason() -> None:
    error = ChainError("entry 3: broken")
    assert isinstance(error, ValueError)
    assert error.reason == "entry 3: broken"


def test_audit_record_holds_every_field_in_canonical_form() -> None:
    record = _record(cost_usd=Decimal("2.5"), policy_id="pol_1")
    assert record == {
        "entry_id": "aud_1",
        "tenant_id": "acme",
        "session_id": "ses_1",
        "agent_id": "agent-7",
        "tool": "stripe",
        "action": "charge",
        "status": "ok",
        "cost_usd": "2.50",
        "charged_usd": "0.00",
        "details": {"customer": "cus_1"},
        "flagged": False,
        "flag_reason": None,
        "timestamp": "2026-04-05T19:00:00.000000Z",
        "policy_id": "pol_1",
    }
    assert canonical_bytes(record) == (
        b'{"action":"charge","agent_id":"agent-7","charged_usd":"0.00","cost_usd":"2.50","details":{"customer":"cus_1"},'
        b'"entry_id":"aud_1","flag_reason":null,"flagged":false,"policy_id":"pol_1","session_id":"ses_1",'
        b'"status":"ok","tenant_id":"acme","timestamp":"2026-04-05T19:00:00.000000Z","tool":"stripe"}'
    )


@pytest.mark.parametrize("cost", ["2.5", "2.50", "2.500000", Decimal("2.5000"), "25e-1"])
def test_equal_costs_give_the_same_record_whatever_their_spelling(cost: Decimal | str) -> None:
    assert _record(cost_usd=cost)["cost_usd"] == "2.50"
    assert hash_leaf(_record(cost_usd=cost)) == hash_leaf(_record(cost_usd="2.50"))


@pytest.mark.parametrize("cost", [1.5, "-1", "NaN", "0.0000001"])
def test_audit_record_refuses_costs_that_are_not_exact_non_negative_decimals(cost: Any) -> None:
    with pytest.raises(InvalidRequest, match="cost_usd"):
        _record(cost_usd=cost)


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 4, 5, 19, 0, tzinfo=UTC), "2026-04-05T19:00:00.000000Z"),
        (datetime(2026, 4, 5, 19, 0, 0, 120, tzinfo=UTC), "2026-04-05T19:00:00.000120Z"),
        (
            datetime(2026, 4, 5, 21, 30, 1, 999999, tzinfo=timezone(timedelta(hours=2))),
            "2026-04-05T19:30:01.999999Z",
        ),
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05.000000Z"),
    ],
)
def test_record_timestamp_is_utc_with_six_fractional_digits_and_z(moment: datetime, text: str) -> None:
    assert timestamp_text(moment) == text
    assert _record(timestamp=moment)["timestamp"] == text


def test_record_timestamp_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        _record(timestamp=datetime(2026, 4, 5, 19, 0))


@pytest.mark.parametrize("status", ["ok", "denied", "error"])
def test_audit_record_accepts_the_three_statuses(status: str) -> None:
    assert _record(status=status)["status"] == status


@pytest.mark.parametrize("status", ["OK", "allowed", ""])
def test_audit_record_refuses_other_statuses(status: str) -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        _record(status=status)


def test_audit_record_refuses_details_that_are_not_an_object_or_hold_nan() -> None:
    with pytest.raises(InvalidRequest, match="details must be a JSON object"):
        _record(details=["a"])
    with pytest.raises(InvalidRequest, match=r"record\.details\.temperature"):
        _record(details={"temperature": float("nan")})
    assert _record(details={"temperature": 0.7})["details"] == {"temperature": 0.7}


def test_audit_record_refuses_a_flag_that_is_not_a_bool() -> None:
    with pytest.raises(ValueError, match="flagged must be a bool"):
        _record(flagged=1)


def test_flagged_record_keeps_its_reason() -> None:
    record = _record(flagged=True, flag_reason="spend spike")
    assert (record["flagged"], record["flag_reason"]) == (True, "spend spike")
    assert hash_leaf(record) != hash_leaf(_record())


@pytest.mark.parametrize(
    ("fields", "flag_reason"),
    [
        ({"details": {"note": "\ud800"}}, None),  # a lone surrogate cannot be UTF-8
        ({"details": {"\udfff": 1}}, None),
        ({"details": {"ratio": float("nan")}}, None),
        ({"details": {}}, "refused: tool '\ud800'"),  # the caller's flag reason is hashed too
    ],
)
def test_a_draft_that_could_not_be_hashed_is_refused_when_drafted_not_in_its_batch(
    fields: dict[str, Any], flag_reason: str | None
) -> None:
    with pytest.raises(InvalidRequest):
        draft_entry(
            entry_id="aud_" + "a" * 24,
            tenant_id="acme",
            session_id=None,
            agent_id=None,
            timestamp=datetime(2026, 4, 5, 19, tzinfo=UTC),
            tool="search",
            action="query",
            status="ok",
            cost_usd="0",
            flag_reason=flag_reason,
            **fields,
        )
