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
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final

import rfc8785

from haldir.core.checkpoints import Checkpoint, CheckpointError, Signer, Verifier, parse_checkpoint
from haldir.core.evidence_facts import Evidence, FactError, decode, encode, shown
from haldir.core.evidence_markdown import check_markdown, signed_block
from haldir.errors import EvidenceTampered

FORMAT: Final = "haldir-compliance-evidence/1"
# What the log key signs for a pack: this context, then the 32-byte digest. The NUL bytes keep it apart
# from every signed note (a checkpoint), whose text may hold no control character: a pack signature can
# never be taken for a checkpoint signature, nor the reverse.
SIGNING_CONTEXT: Final = b"haldir/compliance-evidence/v1\x00"
LOCATOR_BYTES: Final = 8  # field locators only say where a change is; the digests and signature decide

_HEX = re.compile(r"[0-9a-f]{64}")


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
            f"the pack names key {shown(signature['key'])}, not {verifier.vkey}: "
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
    except (FactError, KeyError, TypeError, ValueError) as exc:
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
            f"the pack's format is {shown(pack['format'])}, expected {FORMAT!r}",
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
            raise _at(SIGNATURE_SECTION, name, f"expected {value!r}, found {shown(signature[name])}")
    return signature


def _check_header(spec: Section, section: Mapping[str, Any]) -> None:
    for name, value in _header(spec).items():
        if type(section[name]) is not type(value) or section[name] != value:
            raise _at(
                spec,
                name,
                f"expected {shown(value)}, found {shown(section[name])}: the seed's table was changed",
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
    except FactError as exc:
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
