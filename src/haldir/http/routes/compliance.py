"""Compliance over HTTP: the signed evidence pack, as canonical JSON or Markdown, and the manifest check
that ties a pack handed back to this server's log key and its ledger now."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field

from haldir.core.evidence import render_json
from haldir.core.evidence_markdown import render_markdown
from haldir.governor.evidence import ManifestCheck
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/compliance", tags=["compliance"], responses=ERROR_RESPONSES)


class EvidenceSection(BaseModel):
    section: int = Field(description="1 to 7, in the order of the seed's table.")
    id: str
    title: str
    criterion: str | None = Field(description="The SOC 2 trust services criterion, e.g. `CC6.1`.")
    facts: dict[str, Any] = Field(description="Counts as integers, money as decimal strings, times in UTC.")


class SectionDigest(BaseModel):
    section: int
    digest: str = Field(description="SHA-256 (hex) of the section's canonical JSON.")
    fields: dict[str, str] = Field(description="A short digest of each field by its path: where a change is.")


class EvidenceSignature(BaseModel):
    section: int = Field(description="Always 8.")
    id: str
    title: str
    criterion: None
    digest_algorithm: Literal["SHA-256"]
    digest: str = Field(description="SHA-256 (hex) of the canonical JSON of `{format, sections}`.")
    section_digests: list[SectionDigest]
    signature_algorithm: Literal["Ed25519"]
    key: str = Field(description="The log's verifier key, `GET /v1/audit/log-key`'s `vkey`.")
    signature: str = Field(description="Base64 Ed25519 signature of the signing context and the digest.")


class EvidencePack(BaseModel):
    """The JSON form (RFC 8785 canonical, one line). See docs/compliance.md."""

    format: Literal["haldir-compliance-evidence/1"]
    sections: list[EvidenceSection]
    signature: EvidenceSignature


class ManifestOut(BaseModel):
    valid: bool = Field(description="Signed by this server's log key and consistent with its ledger now.")
    signed_by_log_key: bool = Field(description="Every check of the pack passed under this server's log key.")
    consistent: bool | None = Field(description="The pack's checkpoint is a prefix of the ledger now.")
    problem: str | None = Field(description="What does not match: the section and field, or the ledger.")
    log_key: str
    digest: str | None = Field(description="The pack's digest of sections 1-7, once its signature verified.")
    pack_tree_size: int | None
    tree_size: int = Field(description="The size of the ledger's current signed checkpoint.")
    root_hash: str
    checkpoint: str = Field(description="The current signed checkpoint note.")
    consistency_proof: list[str] = Field(description="From the pack's tree size to `tree_size`, hex.")

    @classmethod
    def of(cls, check: ManifestCheck) -> ManifestOut:
        return cls(
            valid=check.valid,
            signed_by_log_key=check.signed_by_log_key,
            consistent=check.consistent,
            problem=check.problem,
            log_key=check.vkey,
            digest=check.digest,
            pack_tree_size=check.pack_tree_size,
            tree_size=check.tree_size,
            root_hash=check.root_hash.hex(),
            checkpoint=check.checkpoint,
            consistency_proof=[node.hex() for node in check.proof],
        )


When = Annotated[
    AwareDatetime | date | None,
    Query(
        description="ISO 8601 with a time zone, or a date (midnight UTC); "
        "`since` inclusive, `until` exclusive."
    ),
]
Format = Annotated[Literal["json", "md"], Query(description="`json` (canonical) or `md` (Markdown).")]


@router.get(
    "/evidence",
    response_class=Response,
    responses={
        200: {
            "model": EvidencePack,
            "content": {"text/markdown": {"schema": {"type": "string"}}},
            "description": "The signed pack: JSON, or with `format=md` Markdown ending in the signed JSON.",
        }
    },
)
async def compliance_evidence(
    gov: GovernorDep, who: PrincipalDep, since: When = None, until: When = None, format: Format = "json"
) -> Response:
    pack = await gov.evidence.compliance_evidence(who, since=_moment(since), until=_moment(until))
    if format == "md":
        return Response(render_markdown(pack), media_type="text/markdown; charset=utf-8")
    return Response(render_json(pack), media_type="application/json")


@router.post("/evidence/manifest", response_model=ManifestOut)
async def check_evidence_manifest(
    gov: GovernorDep,
    who: PrincipalDep,
    pack: Annotated[
        dict[str, Any], Body(description="A pack's JSON, as `GET /v1/compliance/evidence` gave it.")
    ],
) -> ManifestOut:
    return ManifestOut.of(await gov.evidence.check_evidence_manifest(who, pack))


def _moment(value: datetime | date | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.combine(value, time(), tzinfo=UTC)
