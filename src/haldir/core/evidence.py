"""The compliance evidence pack: seven sections of facts, each mapped to its SOC 2 criterion, and an eighth
that signs them (SHA-256 over their canonical JSON, Ed25519 with the ledger's log key), and its offline check.

The pack is one JSON object, `{"format", "sections": [1..7], "signature": {section 8}}`, whose canonical
form (RFC 8785) is the JSON file; `haldir.core.evidence_markdown` renders the same object as Markdown.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

import rfc8785

from haldir.core.checkpoints import Checkpoint, CheckpointError, Signer, Verifier, parse_checkpoint
from haldir.core.evidence_markdown import check_markdown, signed_block
from haldir.core.keys import ALL, ApiKey
from haldir.core.ledger import timestamp_text
from haldir.errors import EvidenceTampered

FORMAT: Final = "haldir-compliance-evidence/1"
# What the log key signs for a pack: this context, then the 32-byte digest. The NUL bytes keep it apart
# from every signed note (a checkpoint), whose text may hold no control character: a pack signature can
# never be taken for a checkpoint signature, nor the reverse.
SIGNING_CONTEXT: Final = b"haldir/compliance-evidence/v1\x00"
LOCATOR_BYTES: Final = 8  # field locators only say where a change is; the digests and signature decide
SECRET_CIPHER: Final = "AES-256-GCM"  # noqa: S105 (an algorithm name, not a password)
KEY_WRAPPING: Final = "AES-256-GCM envelope: versioned master keys wrap per-tenant data keys"
AAD_BINDS: Final = "tenant, secret name, secret version, data key version"
VALUE_DIGEST: Final = "HMAC-SHA256 (the ledger records it instead of the value)"
INTEGRITY_CHECKS: Final = "hash chain, Merkle root, latest signed checkpoint"

_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_HEX = re.compile(r"[0-9a-f]{64}")
# Refusals the budget made: the texts of `core.sessions.spend_refusal` and of spend-limit policies.
_BUDGET_REFUSAL = re.compile(r"USD of budget left, less than|^Spend limit of ")


# The facts of sections 1-7, as the governor reads them from the store.


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    tenant_created_at: datetime | None
    log_origin: str
    period_since: datetime
    period_until: datetime
    generated_at: datetime
    generator: str


@dataclass(frozen=True)
class KeyFact:
    prefix: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class AccessControl:
    keys_total: int
    keys_active: int
    keys_revoked: int
    keys_active_with_all_scopes: int
    keys_created_in_period: int
    keys_revoked_in_period: int
    keys: tuple[KeyFact, ...]


@dataclass(frozen=True)
class MasterKeyFact:
    version: int
    check_value: str
    created_at: datetime


@dataclass(frozen=True)
class DataKeyFact:
    version: int
    master_version: int
    created_at: datetime


@dataclass(frozen=True)
class Encryption:
    secret_cipher: str
    aad_binds: str
    key_wrapping: str
    value_digest: str
    current_master_key_version: int | None
    current_data_key_version: int | None
    last_master_key_rotation_at: datetime | None
    last_data_key_rotation_at: datetime | None
    secrets: int
    secret_versions: int
    secret_versions_on_older_data_keys: int
    master_keys: tuple[MasterKeyFact, ...]
    data_keys: tuple[DataKeyFact, ...]


@dataclass(frozen=True)
class AuditTrail:
    entries_in_period: int
    first_leaf_in_period: int | None
    last_leaf_in_period: int | None
    flagged_in_period: int
    denied_in_period: int
    entries_total: int
    checkpoint_root_hash: str
    checkpoint_signed_at: datetime
    integrity_checks: str
    integrity_verified: bool
    integrity_verified_entries: int
    integrity_problem: str | None
    checkpoint: str


@dataclass(frozen=True)
class SpendGovernance:
    currency: str
    sessions_created_in_period: int
    sessions_with_spend_cap: int
    spend_caps_usd: Decimal
    spent_by_capped_sessions_usd: Decimal
    charged_in_period_usd: Decimal
    payments_authorized: int
    payments_authorized_usd: Decimal
    payments_captured: int
    payments_captured_usd: Decimal
    payments_voided: int
    payments_voided_usd: Decimal
    budget_refusals_in_period: int


@dataclass(frozen=True)
class RuleFact:
    rule_id: str
    type: str
    threshold_usd: Decimal | None
    tool: str | None
    agent_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class HumanApprovals:
    requested_in_period: int
    pending: int
    approved_unused: int
    consumed: int
    denied: int
    expired: int
    rules: tuple[RuleFact, ...]


@dataclass(frozen=True)
class WebhookFact:
    webhook_id: str
    endpoint: str
    events: tuple[str, ...]
    enabled: bool
    created_at: datetime


@dataclass(frozen=True)
class OutboundAlerting:
    webhooks_total: int
    webhooks_enabled: int
    deliveries_in_period: int
    delivered: int
    failed: int
    pending: int
    attempts_in_period: int
    delivery_success_percent: Decimal | None
    webhooks: tuple[WebhookFact, ...]


@dataclass(frozen=True)
class Evidence:
    """Sections 1-7, in order."""

    identity: Identity
    access_control: AccessControl
    encryption: Encryption
    audit_trail: AuditTrail
    spend_governance: SpendGovernance
    human_approvals: HumanApprovals
    outbound_alerting: OutboundAlerting


@dataclass(frozen=True)
class Section:
    number: int
    id: str
    title: str
    criterion: str | None


# The seed's table: every section and its SOC 2 trust services criterion.
SECTIONS: Final = (
    Section(1, "identity", "Identity", None),
    Section(2, "access_control", "Access control", "CC6.1"),
    Section(3, "encryption", "Encryption", "CC6.7"),
    Section(4, "audit_trail", "Audit trail", "CC7.2"),
    Section(5, "spend_governance", "Spend governance", "CC5.2"),
    Section(6, "human_approvals", "Human approvals", "CC8.1"),
    Section(7, "outbound_alerting", "Outbound alerting", "CC7.3"),
)
SIGNATURE_SECTION: Final = Section(8, "document_signature", "Document signature", None)
_FACTS: Final[dict[str, type[Any]]] = {
    field.name: typing.get_type_hints(Evidence)[field.name] for field in fields(Evidence)
}


@dataclass(frozen=True)
class VerifiedEvidence:
    """What a verified pack says of itself."""

    tenant_id: str
    period_since: datetime
    period_until: datetime
    digest: str
    vkey: str
    checkpoint: Checkpoint
    pack: dict[str, Any]


# What the store counts for a pack (`haldir.store.ports.EvidenceStore`), money in micro-units.


@dataclass(frozen=True)
class LedgerPeriod:
    """The tenant's entries created in the period among its first `below` leaves (a checkpoint's size)."""

    entries: int
    first_leaf: int | None
    last_leaf: int | None
    flagged: int
    denied: int
    charged_micros: int
    budget_refusals: int


@dataclass(frozen=True)
class SessionTotals:
    """Sessions created in the period: all, those with a spend cap, their caps and spend."""

    created: int
    capped: int
    caps_micros: int
    spent_micros: int


@dataclass(frozen=True)
class PaymentTotals:
    """Payments authorized in the period, by where they stand now: count and money (for captured ones,
    the captured amount; for the others, the authorized amount)."""

    counts: Mapping[str, int]
    micros: Mapping[str, int]


@dataclass(frozen=True)
class DeliveryTotals:
    """Webhook deliveries made in the period by status, and delivery attempts in the period."""

    statuses: Mapping[str, int]
    attempts: int


@dataclass(frozen=True)
class VaultKeys:
    """The deployment's master key versions, the tenant's data key versions, and its secrets."""

    master_keys: tuple[MasterKeyFact, ...]
    data_keys: tuple[DataKeyFact, ...]
    secrets: int
    secret_versions_by_data_key: Mapping[int, int]


# Pure derivations from what the store holds.


def access_control(keys: Sequence[ApiKey], *, since: datetime, until: datetime) -> AccessControl:
    """Section 2 from the tenant's API keys (never their values)."""
    active = [key for key in keys if key.revoked_at is None]
    return AccessControl(
        keys_total=len(keys),
        keys_active=len(active),
        keys_revoked=len(keys) - len(active),
        keys_active_with_all_scopes=sum(ALL in key.scopes for key in active),
        keys_created_in_period=sum(since <= key.created_at < until for key in keys),
        keys_revoked_in_period=sum(
            key.revoked_at is not None and since <= key.revoked_at < until for key in keys
        ),
        keys=tuple(
            KeyFact(key.prefix, key.name, tuple(sorted(key.scopes)), key.created_at, key.revoked_at)
            for key in keys
        ),
    )


def is_budget_refusal(reason: object) -> bool:
    """Whether a denied entry's `refused` reason is a budget or spend-limit refusal."""
    return isinstance(reason, str) and _BUDGET_REFUSAL.search(reason) is not None


def success_percent(delivered: int, failed: int) -> Decimal | None:
    """Delivered out of finished deliveries, in percent with two decimals; None when none finished."""
    finished = delivered + failed
    if finished == 0:
        return None
    return (Decimal(100 * delivered) / finished).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


# Signing.


def sign_evidence(evidence: Evidence, signer: Signer) -> dict[str, Any]:
    """The signed pack of `evidence`: its JSON object, ready for `render_json` and `render_markdown`."""
    sections = [_section_json(spec, getattr(evidence, spec.id)) for spec in SECTIONS]
    digest = pack_digest(sections)
    signature = signer.sign(SIGNING_CONTEXT + digest)
    return {
        "format": FORMAT,
        "sections": sections,
        "signature": {
            **_header(SIGNATURE_SECTION),
            "digest_algorithm": "SHA-256",
            "digest": digest.hex(),
            "section_digests": [_section_digest(section) for section in sections],
            "signature_algorithm": "Ed25519",
            "key": signer.vkey,
            "signature": base64.b64encode(signature).decode(),
        },
    }


def pack_digest(sections: Sequence[Mapping[str, Any]]) -> bytes:
    """SHA-256 of the canonical JSON of `{"format", "sections"}`: the seed's self-hash of sections 1-7."""
    return hashlib.sha256(canonical({"format": FORMAT, "sections": list(sections)})).digest()


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON."""
    return rfc8785.dumps(value)


def render_json(pack: Mapping[str, Any]) -> str:
    """The JSON file of a pack: its canonical JSON and a newline."""
    return canonical(dict(pack)).decode() + "\n"


def _header(spec: Section) -> dict[str, Any]:
    return {"section": spec.number, "id": spec.id, "title": spec.title, "criterion": spec.criterion}


def _section_json(spec: Section, facts: Any) -> dict[str, Any]:
    return {**_header(spec), "facts": encode(facts)}


def _section_digest(section: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "section": section["section"],
        "digest": hashlib.sha256(canonical(dict(section))).hexdigest(),
        "fields": dict(_locators(section["facts"])),
    }


def _locators(facts: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """A short digest of every leaf of `facts` by its path: where a change is, not whether there is one."""
    for path, value in _leaves(facts, ""):
        yield path, hashlib.sha256(canonical([path, value])).digest()[:LOCATOR_BYTES].hex()


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _leaves(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


# The JSON form of the facts, and back, strictly.


def encode(value: Any) -> Any:
    """The JSON value of a fact: money as decimal strings, times as `timestamp_text`, dataclasses in
    field order."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return timestamp_text(value)
    if isinstance(value, tuple):
        return [encode(item) for item in value]
    if is_dataclass(value) and not isinstance(value, type):
        return {field.name: encode(getattr(value, field.name)) for field in fields(value)}
    raise TypeError(f"not an evidence fact: {type(value).__name__}")


class _Malformed(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def decode(kind: Any, value: Any, path: str = "") -> Any:
    """The fact of type `kind` that `value` is the JSON of; `_Malformed` naming the path otherwise."""
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        return None if value is None else decode(options[0], value, path)
    if kind is bool or kind is int or kind is str:
        if type(value) is not kind:
            raise _Malformed(path, f"expected {kind.__name__}, found {_shown(value)}")
        return value
    if kind is Decimal:
        if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
            raise _Malformed(path, f"expected an amount as a decimal string, found {_shown(value)}")
        return Decimal(value)
    if kind is datetime:
        if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
            raise _Malformed(
                path, f"expected a UTC time such as 2026-01-01T00:00:00.000000Z, found {_shown(value)}"
            )
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list):
            raise _Malformed(path, f"expected a list, found {_shown(value)}")
        item_kind = typing.get_args(kind)[0]
        return tuple(decode(item_kind, item, f"{path}[{index}]") for index, item in enumerate(value))
    if isinstance(kind, type) and is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        names = [field.name for field in fields(kind)]
        if not isinstance(value, dict) or set(value) != set(names):
            raise _Malformed(path, f"expected an object with the fields {names}")
        return kind(
            **{name: decode(hints[name], value[name], f"{path}.{name}" if path else name) for name in names}
        )
    raise TypeError(f"no JSON form for {kind!r}")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "null"
    return text if len(text) <= 60 else text[:57] + "..."


# Verification.


def parse_document(document: str | bytes) -> tuple[dict[str, Any], str]:
    """The pack in a JSON or Markdown document, and which form it is (`json` or `markdown`); the Markdown
    text is checked against the rendering of the pack it carries."""
    text = _text(document)
    if text.lstrip().startswith("{"):
        return _parse_json(text, where="the file"), "json"
    pack = _parse_json(signed_block(text), where="the signed JSON block")
    check_markdown(text, ordered(pack))
    return pack, "markdown"


def verify_evidence(document: str | bytes, verifier: Verifier) -> VerifiedEvidence:
    """Verify a pack, JSON or Markdown, with nothing but the log's public key; raise `EvidenceTampered`
    naming the section and the field (or, in Markdown, the line) that does not match.

    Steps:
      1. the document is UTF-8; a JSON document is a JSON object, a Markdown one ends in its signed JSON
         block (see `evidence_markdown`);
      2-8. the pack verifies (`verify_pack`);
      9. a JSON document is exactly the pack's canonical JSON and a newline; a Markdown document is
         exactly the rendering of its pack, so an edited line of text is named with its section.
    """
    # Step 1.
    text = _text(document)
    is_json = text.lstrip().startswith("{")
    pack = _parse_json(
        text if is_json else signed_block(text), where="the file" if is_json else "the signed JSON block"
    )
    # Steps 2-8.
    verified = verify_pack(pack, verifier)
    # Step 9.
    if is_json:
        expected = render_json(pack)
        if text != expected:
            offset = next((i for i, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b), None)
            at = min(len(text), len(expected)) if offset is None else offset
            raise EvidenceTampered(
                f"the file is not the pack's canonical JSON from character {at} on (spacing, key order or "
                "escapes were changed): its content verifies, but not its form",
                section=SIGNATURE_SECTION.number,
                field=None,
            )
    else:
        check_markdown(text, ordered(pack))
    return verified


def verify_pack(pack: Any, verifier: Verifier) -> VerifiedEvidence:
    """Verify a parsed pack with the log's public key; raise `EvidenceTampered` naming where it fails.

    Steps:
      2. the pack has exactly its fields, its format, and the eight sections' headers of the seed's table;
      3. section 8's key is `verifier`'s;
      4. section 8's signature verifies under it over SIGNING_CONTEXT and section 8's digest;
      5. each of sections 1-7 holds its facts in their exact JSON form (types, money as decimal strings,
         times in UTC), and its SHA-256 and field locators are the ones section 8 states: a difference is
         named by the first field whose locator differs;
      6. the digest of sections 1-7 is the one signed;
      7. the period is well formed: since <= until <= generated at;
      8. the checkpoint in section 4 verifies under the same key, its origin is section 1's log origin, and
         its tree size and root hash are the ones section 4 states.
    """
    # Step 2.
    signature = _check_shape(pack)
    sections: list[dict[str, Any]] = pack["sections"]
    # Step 3.
    if signature["key"] != verifier.vkey:
        raise _at(
            SIGNATURE_SECTION,
            "key",
            f"the pack names key {_shown(signature['key'])}, not {verifier.vkey}: "
            "it was signed by another log, or the key was changed",
        )
    # Step 4.
    digest = _digest_bytes(signature["digest"])
    if not verifier.verify(SIGNING_CONTEXT + digest, _signature_bytes(signature["signature"])):
        raise _at(
            SIGNATURE_SECTION,
            "signature",
            "the signature does not verify over the stated digest: the digest or the signature was changed",
        )
    # Step 5.
    evidence = Evidence(**{spec.id: _check_section(spec, sections, signature) for spec in SECTIONS})
    # Step 6.
    if pack_digest(sections) != digest:
        raise _at(
            SIGNATURE_SECTION, "digest", "the sections' digest is not the one signed: the pack was changed"
        )
    # Step 7.
    identity = evidence.identity
    if not identity.period_since <= identity.period_until <= identity.generated_at:
        raise _at(
            SECTIONS[0], "period_since", "the period must not end before it starts, nor after generation time"
        )
    # Step 8.
    checkpoint = _check_checkpoint(evidence, verifier)
    return VerifiedEvidence(
        tenant_id=identity.tenant_id,
        period_since=identity.period_since,
        period_until=identity.period_until,
        digest=digest.hex(),
        vkey=verifier.vkey,
        checkpoint=checkpoint,
        pack=pack,
    )


def ordered(pack: Mapping[str, Any]) -> dict[str, Any]:
    """`pack` with every section's facts in field order (parsed JSON holds them sorted), to render."""
    try:
        sections = [
            {**section, "facts": encode(decode(_FACTS[spec.id], section["facts"]))}
            for spec, section in zip(SECTIONS, pack["sections"], strict=True)
        ]
    except (_Malformed, KeyError, TypeError, ValueError) as exc:
        raise EvidenceTampered(
            f"the signed JSON block does not hold a pack's sections: {exc}", section=None, field=None
        ) from None
    signature = {name: pack["signature"][name] for name in _SIGNATURE_FIELDS if name in pack["signature"]}
    return {**pack, "sections": sections, "signature": signature}


_SIGNATURE_FIELDS: Final = (
    *_header(SIGNATURE_SECTION),
    "digest_algorithm",
    "digest",
    "section_digests",
    "signature_algorithm",
    "key",
    "signature",
)


def _text(document: str | bytes) -> str:
    if isinstance(document, str):
        return document
    try:
        return document.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvidenceTampered(
            f"the file is not UTF-8 (byte {exc.start}): it was edited", section=None, field=None
        ) from None


def _parse_json(text: str, *, where: str) -> dict[str, Any]:
    try:
        found = json.loads(text, parse_float=_no_float, parse_constant=_no_float)
    except ValueError as exc:
        raise EvidenceTampered(f"{where} is not valid JSON: {exc}", section=None, field=None) from None
    if not isinstance(found, dict):
        raise EvidenceTampered(f"{where} is not a JSON object", section=None, field=None)
    return found


def _no_float(text: str) -> Any:
    raise ValueError(f"a pack holds no floating-point number, found {text}")


def _check_shape(pack: Any) -> dict[str, Any]:
    if not isinstance(pack, dict) or set(pack) != {"format", "sections", "signature"}:
        raise EvidenceTampered(
            "not a compliance evidence pack: expected the fields format, sections and signature",
            section=None,
            field=None,
        )
    if pack["format"] != FORMAT:
        raise EvidenceTampered(
            f"the pack's format is {_shown(pack['format'])}, expected {FORMAT!r}",
            section=None,
            field="format",
        )
    sections = pack["sections"]
    if not isinstance(sections, list) or len(sections) != len(SECTIONS):
        raise EvidenceTampered(
            f"a pack holds sections 1 to {len(SECTIONS)}, in order", section=None, field="sections"
        )
    for spec, section in zip(SECTIONS, sections, strict=True):
        if not isinstance(section, dict) or set(section) != {"section", "id", "title", "criterion", "facts"}:
            raise _at(
                spec,
                None,
                "the section does not have exactly the fields section, id, title, criterion and facts",
            )
        _check_header(spec, section)
    signature = pack["signature"]
    expected = {"digest_algorithm", "digest", "section_digests", "signature_algorithm", "key", "signature"}
    if not isinstance(signature, dict) or set(signature) != expected | {
        "section",
        "id",
        "title",
        "criterion",
    }:
        raise _at(
            SIGNATURE_SECTION,
            None,
            f"section 8 must have exactly the fields {sorted(expected)} besides its header",
        )
    _check_header(SIGNATURE_SECTION, signature)
    for name, value in (("digest_algorithm", "SHA-256"), ("signature_algorithm", "Ed25519")):
        if signature[name] != value:
            raise _at(SIGNATURE_SECTION, name, f"expected {value!r}, found {_shown(signature[name])}")
    return signature


def _check_header(spec: Section, section: Mapping[str, Any]) -> None:
    for name, value in _header(spec).items():
        if type(section[name]) is not type(value) or section[name] != value:
            raise _at(
                spec,
                name,
                f"expected {_shown(value)}, found {_shown(section[name])}: the seed's table was changed",
            )


def _check_section(spec: Section, sections: Sequence[dict[str, Any]], signature: Mapping[str, Any]) -> Any:
    section = sections[spec.number - 1]
    stated = _stated_digest(spec, signature["section_digests"])
    mine = _section_digest(section)
    if mine["digest"] != stated["digest"]:
        changed = _first_difference(mine["fields"], stated["fields"])
        if changed is None:
            raise _at(
                spec,
                None,
                f"the section, or its digest in section 8 (section_digests[{spec.number - 1}]), was changed",
            )
        raise _at(spec, changed, "the value differs from the one signed: it was changed")
    if mine["fields"] != stated["fields"]:
        changed = _first_difference(mine["fields"], stated["fields"]) or ""
        raise _at(
            SIGNATURE_SECTION,
            f"section_digests[{spec.number - 1}].fields.{changed}",
            "a field locator was changed",
        )
    try:
        facts = decode(_FACTS[spec.id], section["facts"])
    except _Malformed as exc:
        raise _at(spec, exc.path or None, exc.reason) from None
    if encode(facts) != section["facts"]:  # a value not in its one JSON form, e.g. an amount as 47.3
        raise _at(spec, None, "a value is not in its canonical JSON form")
    return facts


def _stated_digest(spec: Section, stated: Any) -> dict[str, Any]:
    where = f"section_digests[{spec.number - 1}]"
    if not isinstance(stated, list) or len(stated) != len(SECTIONS):
        raise _at(
            SIGNATURE_SECTION, "section_digests", f"expected one digest per section 1 to {len(SECTIONS)}"
        )
    item = stated[spec.number - 1]
    if (
        not isinstance(item, dict)
        or set(item) != {"section", "digest", "fields"}
        or item["section"] != spec.number
        or not isinstance(item["digest"], str)
        or not isinstance(item["fields"], dict)
    ):
        raise _at(SIGNATURE_SECTION, where, "expected {section, digest, fields} of this section")
    return item


def _first_difference(mine: Mapping[str, str], stated: Mapping[str, str]) -> str | None:
    for path in [*mine, *(path for path in stated if path not in mine)]:
        if mine.get(path) != stated.get(path):
            return path
    return None


def _check_checkpoint(evidence: Evidence, verifier: Verifier) -> Checkpoint:
    audit, spec = evidence.audit_trail, SECTIONS[3]
    try:
        checkpoint = parse_checkpoint(audit.checkpoint, verifier, origin=evidence.identity.log_origin)
    except CheckpointError as exc:
        raise _at(spec, "checkpoint", f"the signed checkpoint does not verify: {exc.reason}") from None
    if checkpoint.tree_size != audit.entries_total:
        raise _at(spec, "entries_total", f"the signed checkpoint covers {checkpoint.tree_size} entries")
    if checkpoint.root_hash.hex() != audit.checkpoint_root_hash:
        raise _at(spec, "checkpoint_root_hash", "it is not the signed checkpoint's root hash")
    return checkpoint


def _digest_bytes(text: Any) -> bytes:
    if not isinstance(text, str) or not _HEX.fullmatch(text):
        raise _at(SIGNATURE_SECTION, "digest", "expected a SHA-256 digest as 64 lowercase hex characters")
    return bytes.fromhex(text)


def _signature_bytes(text: Any) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64 or base64.b64encode(raw).decode() != text:
        raise _at(
            SIGNATURE_SECTION, "signature", "expected an Ed25519 signature as canonical base64 of 64 bytes"
        )
    return raw


def where(spec: Section) -> str:
    """How messages name a section: `section 4 (Audit trail, CC7.2)`."""
    criterion = f", {spec.criterion}" if spec.criterion else ""
    return f"section {spec.number} ({spec.title}{criterion})"


def _at(spec: Section, field: str | None, reason: str) -> EvidenceTampered:
    place = where(spec) + (f", field {field}" if field else "")
    return EvidenceTampered(f"{place}: {reason}", section=spec.number, field=field)
