"""Ledger entry encoding: canonical record bytes, leaf hashes and the per-tenant hash chain.

This is the contract third-party verifiers rely on: leaf bytes are the RFC 8785 canonical JSON of the
record, `leaf_hash = SHA-256(0x00 || leaf bytes)` (the RFC 6962 leaf hash) and
`entry_hash = SHA-256(prev_entry_hash || leaf_hash)`, starting from 32 zero bytes for a tenant's first entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import rfc8785

from haldir.core.anomalies import (
    DEFAULT_SETTINGS,
    AnomalySettings,
    Candidate,
    RecentEntry,
    Rule,
    detect,
)
from haldir.core.clock import utc
from haldir.core.money import format_micros, format_signed_micros, signed_micros, to_micros
from haldir.errors import InvalidRequest

HASH_SIZE = 32
GENESIS = bytes(HASH_SIZE)
LEAF_PREFIX = b"\x00"
STATUSES = frozenset({"ok", "denied", "error"})

_HEX = re.compile(r"[0-9a-f]{64}")


class ChainError(ValueError):
    """A ledger entry does not match its record or does not link to the entry before it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ChainLink:
    """The chain fields stored with a ledger entry."""

    leaf_index: int
    leaf_hash: bytes
    prev_hash: bytes
    entry_hash: bytes


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The RFC 8785 canonical JSON of `record`: the exact bytes a ledger leaf commits to.

    Finite floats are allowed (tool arguments carry them) and serialised as RFC 8785 prescribes, the
    shortest text that reads back as the same double; NaN and infinities are refused. Money never travels
    as a float: costs are decimal strings.
    """
    if not isinstance(record, dict):
        raise InvalidRequest(f"a ledger record must be a JSON object, got {type(record).__name__}")
    if _orjson_agrees(record):
        try:
            return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # nested deeper than orjson goes, or a lone surrogate: see below
            pass
    _refuse_non_finite(record)
    try:
        return rfc8785.dumps(record)
    except rfc8785.CanonicalizationError as exc:
        raise InvalidRequest(f"a ledger record must be plain JSON: {exc}") from None
    except UnicodeEncodeError:  # the reference sorts keys as UTF-16, which a lone surrogate is not
        raise InvalidRequest("a ledger record must be plain JSON: a key is not valid Unicode") from None
    except RecursionError:
        raise InvalidRequest("a ledger record is nested too deeply to canonicalize") from None


_MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 numbers are IEEE doubles: larger integers are refused
_SIMPLE_SCALARS = (str, bool, type(None))
_WALK_LIMIT = 100_000  # values; a bigger (or cyclic) record takes the reference path, which refuses cycles


def _orjson_agrees(record: dict[str, Any]) -> bool:
    """Whether orjson's sorted, compact output is `record`'s RFC 8785 form, byte for byte.

    It is when the record holds only exact dicts, lists, strings, booleans, nulls and integers within
    ±(2**53 - 1), and every key sorts the same by code point as by UTF-16 code unit (all below U+D800).
    Anything else (floats, whose text RFC 8785 defines differently, tuples, subclasses, other types) goes
    to the reference implementation, which decides. Property tests hold the two equal.
    """
    pending: list[Any] = [record]
    seen = 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > _WALK_LIMIT:
            return False
        kind = type(value)
        if kind is dict:
            for key in value:
                if type(key) is not str or not (key.isascii() or max(key) < "\ud800"):
                    return False
            pending.extend(value.values())
        elif kind is list:
            pending.extend(value)
        elif kind is int:
            if not -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
                return False
        elif kind not in _SIMPLE_SCALARS:
            return False
    return True


def _refuse_non_finite(record: dict[str, Any]) -> None:
    pending: list[tuple[str, Any]] = [("record", record)]
    containers: set[int] = set()  # each walked once: a cyclic record ends here, refused as too deep below
    while pending:
        path, value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(
                f"ledger records cannot hold NaN or infinities: {path} is {value!r}", field=path
            )
        if isinstance(value, dict | list | tuple):
            if id(value) in containers:
                continue
            containers.add(id(value))
        if isinstance(value, dict):
            pending.extend((f"{path}.{key}", item) for key, item in value.items())
        elif isinstance(value, list | tuple):
            pending.extend((f"{path}[{index}]", item) for index, item in enumerate(value))


def hash_leaf(record: Mapping[str, Any]) -> bytes:
    """SHA-256(0x00 || canonical bytes): the RFC 6962 Merkle leaf hash of `record`."""
    return hashlib.sha256(LEAF_PREFIX + canonical_bytes(record)).digest()


def hash_entry(prev_hash: bytes, leaf_hash: bytes) -> bytes:
    """SHA-256(prev_hash || leaf_hash): the entry hash that links an entry to the one before it."""
    _require_hash("prev_hash", prev_hash)
    _require_hash("leaf_hash", leaf_hash)
    return hashlib.sha256(prev_hash + leaf_hash).digest()


def chain(
    records: Iterable[Mapping[str, Any]], *, prev: bytes = GENESIS, first_index: int = 0
) -> list[ChainLink]:
    """The chain fields of consecutive `records`, appended after the entry whose hash is `prev`."""
    _require_hash("prev", prev)
    if first_index < 0:
        raise ValueError(f"first_index must not be negative, got {first_index}")
    links: list[ChainLink] = []
    for index, record in enumerate(records, start=first_index):
        leaf = hash_leaf(record)
        link = ChainLink(leaf_index=index, leaf_hash=leaf, prev_hash=prev, entry_hash=hash_entry(prev, leaf))
        links.append(link)
        prev = link.entry_hash
    return links


def verify_entry(
    record: Mapping[str, Any],
    *,
    leaf_index: int,
    leaf_hash: bytes,
    prev_hash: bytes,
    entry_hash: bytes,
    expected_prev: bytes,
    expected_index: int | None = None,
) -> None:
    """Check one stored entry against its record and its predecessor; raise `ChainError` naming the mismatch.

    Steps:
      1. every stored hash is 32 bytes and the index is a non-negative integer;
      2. the index is the one expected, when the caller knows it (walking an export from its start);
      3. `prev_hash` equals `expected_prev`, the entry hash of the entry before (GENESIS for the first);
      4. the record's canonical bytes hash to the stored `leaf_hash`;
      5. SHA-256(prev_hash || leaf_hash) equals the stored `entry_hash`.
    """
    # Step 1: well-formed stored fields.
    if type(leaf_index) is not int or leaf_index < 0:
        raise ChainError(f"entry has a malformed leaf_index {leaf_index!r}: expected a non-negative integer")
    where = f"entry {leaf_index}"
    for name, value in (
        ("leaf_hash", leaf_hash),
        ("prev_hash", prev_hash),
        ("entry_hash", entry_hash),
        ("expected_prev", expected_prev),
    ):
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise ChainError(f"{where}: {name} is not a {HASH_SIZE}-byte hash")
    # Step 2: position.
    if expected_index is not None and leaf_index != expected_index:
        raise ChainError(
            f"{where}: leaf_index is {leaf_index}, expected {expected_index} (a gap or reordering)"
        )
    # Step 3: link to the previous entry.
    if prev_hash != expected_prev:
        raise ChainError(
            f"{where}: prev_hash {to_hex(prev_hash)} does not match the previous entry hash "
            f"{to_hex(expected_prev)} (an entry was removed, inserted or reordered)"
        )
    # Step 4: the record is what the leaf committed to.
    try:
        computed_leaf = hash_leaf(record)
    except InvalidRequest as exc:  # no such record was ever appended, so it was changed
        raise ChainError(f"{where}: record cannot be canonicalized ({exc.message}): it was changed") from None
    if computed_leaf != leaf_hash:
        raise ChainError(
            f"{where}: record does not match its leaf_hash: stored {to_hex(leaf_hash)}, "
            f"record hashes to {to_hex(computed_leaf)} (the record was changed)"
        )
    # Step 5: the chain link.
    computed_entry = hash_entry(prev_hash, leaf_hash)
    if computed_entry != entry_hash:
        raise ChainError(
            f"{where}: entry_hash {to_hex(entry_hash)} does not match "
            f"SHA-256(prev_hash || leaf_hash) = {to_hex(computed_entry)}"
        )


def to_hex(digest: bytes) -> str:
    """A hash as lowercase hex, the form hashes take in JSON."""
    return digest.hex()


def from_hex(text: str, *, field: str = "hash") -> bytes:
    """A 32-byte hash from 64 lowercase hex characters; anything else raises `InvalidRequest`."""
    if not isinstance(text, str) or not _HEX.fullmatch(text):
        shown = text if isinstance(text, str) and len(text) <= 80 else type(text).__name__
        raise InvalidRequest(
            f"{field} must be a SHA-256 hash as 64 lowercase hex characters, got {shown!r}", field=field
        )
    return bytes.fromhex(text)


def timestamp_text(moment: datetime) -> str:
    """ISO-8601 UTC with exactly six fractional digits and `Z`, e.g. `2026-04-05T19:00:00.000000Z`."""
    return utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def audit_record(
    *,
    entry_id: str,
    tenant_id: str,
    session_id: str | None,
    agent_id: str | None,
    tool: str,
    action: str,
    status: str,
    cost_usd: Decimal | int | str,
    details: dict[str, Any],
    flagged: bool,
    flag_reason: str | None,
    timestamp: datetime,
    charged_micros: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """The canonical record of an audit entry; every field of it, tenant and flags included, is hashed.

    `cost_usd` is what the action cost, as reported; `charged_usd` is what the entry changed its
    session's `spent` by: the amount for a charge or an authorization, negative for a released
    reservation, zero for a cost already covered by an authorization. Summing `charged_usd` over a
    session's entries gives its `spent`. Amounts are normalised to Haldir's decimal text (`0.5` and
    `0.500` both become `"0.50"`) so equal amounts always hash alike. `extra` carries later fields
    (policy ids, decisions) verbatim.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {sorted(STATUSES)}, got {status!r}")
    if type(flagged) is not bool:
        raise ValueError(f"flagged must be a bool, got {flagged!r}")
    if not isinstance(details, dict):
        raise InvalidRequest(f"details must be a JSON object, got {type(details).__name__}", field="details")
    record: dict[str, Any] = {
        "entry_id": entry_id,
        "tenant_id": tenant_id,
        "session_id": session_id,
        "agent_id": agent_id,
        "tool": tool,
        "action": action,
        "status": status,
        "cost_usd": format_micros(to_micros(cost_usd, field="cost_usd")),
        "charged_usd": format_signed_micros(charged_micros),
        "details": details,
        "flagged": flagged,
        "flag_reason": flag_reason,
        "timestamp": timestamp_text(timestamp),
        **extra,
    }
    canonical_bytes(record)  # refuse what could not be hashed now, not when the entry is appended
    return record


def _require_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"{name} must be a {HASH_SIZE}-byte hash")


@dataclass(frozen=True)
class NewEntry:
    """An entry to append: its record and the canonical bytes that the leaf commits to."""

    tenant_id: str
    record: dict[str, Any]
    canonical: bytes


@dataclass(frozen=True)
class EntryDraft:
    """An entry whose flags are not judged yet. The store judges it where it appends it: inside the
    appending transaction it reads the tenant's rules and the session's latest entries (earlier entries of
    the same batch included, so entries of one session committing together see each other) and calls
    `build`. `record` holds every field, checked to canonicalize when drafted (a record that could not
    would fail the whole batch it is appended in); its flags are the caller's until `build` judges them,
    and a `flag_reason` given here wins over detection."""

    tenant_id: str
    session_id: str | None
    record: dict[str, Any]
    flag_reason: str | None = None

    @property
    def entry_id(self) -> str:
        entry_id: str = self.record["entry_id"]
        return entry_id

    @functools.cached_property
    def candidate(self) -> Candidate:
        """What the detectors judge (worked out once: `build` and `as_recent` both need it)."""
        return Candidate(
            session_id=self.session_id,
            tool=self.record["tool"],
            action=self.record["action"],
            status=self.record["status"],
            cost_micros=to_micros(self.record["cost_usd"]),
            timestamp=datetime.fromisoformat(self.record["timestamp"]),
        )

    def as_recent(self) -> RecentEntry:
        """How this entry looks to the detectors judging a later entry of its session."""
        candidate = self.candidate
        return RecentEntry(candidate.timestamp, candidate.cost_micros, candidate.status, candidate.tool)

    def build(
        self,
        recent: Sequence[RecentEntry],
        rules: Sequence[Rule],
        settings: AnomalySettings = DEFAULT_SETTINGS,
    ) -> NewEntry:
        """The entry, flagged when the detectors or the tenant's rules say so (see `detect`)."""
        flag_reason = self.flag_reason
        if flag_reason is None:
            flag_reason = detect(self.candidate, recent, rules, self.candidate.timestamp, settings)
        record = {**self.record, "flagged": flag_reason is not None, "flag_reason": flag_reason}
        return NewEntry(tenant_id=self.tenant_id, record=record, canonical=canonical_bytes(record))


def draft_entry(
    *,
    entry_id: str,
    tenant_id: str,
    session_id: str | None,
    agent_id: str | None,
    timestamp: datetime,
    flag_reason: str | None = None,
    **fields: Any,
) -> EntryDraft:
    """A draft of `audit_record(...)`: the same fields, checked now, judged when appended."""
    record = audit_record(
        entry_id=entry_id,
        tenant_id=tenant_id,
        session_id=session_id,
        agent_id=agent_id,
        flagged=flag_reason is not None,
        flag_reason=flag_reason,
        timestamp=timestamp,
        **fields,
    )
    return EntryDraft(tenant_id=tenant_id, session_id=session_id, record=record, flag_reason=flag_reason)


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored: every column, so that verification can compare each with the record."""

    tenant_id: str
    leaf_index: int
    entry_id: str
    record_text: str
    leaf_hash: bytes
    prev_hash: bytes
    entry_hash: bytes
    columns: dict[str, Any]

    @property
    def record(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.record_text)
        return parsed


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    note: str
    signed_at: datetime


@dataclass(frozen=True)
class EntryFilter:
    session_id: str | None = None
    agent_id: str | None = None
    tool: str | None = None
    status: str | None = None
    flagged: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def indexed_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The copies of record fields a store keeps beside the record to filter on; verification
    recomputes them from the record and compares."""
    return {
        "entry_id": record["entry_id"],
        "session_id": record.get("session_id"),
        "agent_id": record.get("agent_id"),
        "tool": record["tool"],
        "status": record["status"],
        "flagged": record["flagged"],
        "cost": to_micros(record["cost_usd"]),
        "charged": signed_micros(record.get("charged_usd", "0")),  # absent from entries before payments
        "created_at": datetime.fromisoformat(record["timestamp"]),
    }
