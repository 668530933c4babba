"""The Vault over HTTP: store secret versions, release a value to a session, read metadata, delete.

A value leaves the server only in the answer to `GET /v1/secrets/{name}` with `X-Session-ID`; every
other answer carries metadata alone.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from haldir.core.pagination import MAX_PAGE, encode_cursor
from haldir.core.secrets import SECRET_NAME, SecretInfo, SecretVersion
from haldir.errors import InvalidRequest
from haldir.governor.vault import ReleasedSecret
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES
from haldir.http.routes.keys import IdempotencyKey
from haldir.http.schemas import OptionalTimestamp, Timestamp, documented_pattern

router = APIRouter(prefix="/v1/secrets", tags=["secrets"], responses=ERROR_RESPONSES)

SessionHeader = Annotated[
    str | None,
    Header(
        alias="X-Session-ID",
        max_length=100,
        description="The session the value is released to; without it only metadata is returned.",
    ),
]


NAME_DESCRIPTION = "1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit."
SecretName = Annotated[
    str, Path(description=NAME_DESCRIPTION, json_schema_extra=documented_pattern(SECRET_NAME))
]


class SecretCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description=NAME_DESCRIPTION, json_schema_extra=documented_pattern(SECRET_NAME))
    value: str = Field(description="Non-empty text, at most 64 KiB as UTF-8. Never returned by this route.")
    scope_required: str = Field(
        default="read", max_length=200, description="The session scope a release needs."
    )


class SecretStored(BaseModel):
    name: str
    version: int
    scope_required: str
    created_at: Timestamp

    @classmethod
    def of(cls, stored: SecretVersion) -> SecretStored:
        return cls(
            name=stored.name,
            version=stored.version,
            scope_required=stored.scope_required,
            created_at=stored.created_at,
        )


class SecretValue(BaseModel):
    name: str
    version: int
    value: str
    scope_required: str

    @classmethod
    def of(cls, released: ReleasedSecret) -> SecretValue:
        return cls(
            name=released.name,
            version=released.version,
            value=released.value,
            scope_required=released.scope_required,
        )


class SecretOut(BaseModel):
    name: str
    latest_version: int
    versions: int
    scope_required: str = Field(description="The latest version's.")
    access_count: int
    last_accessed_at: OptionalTimestamp = None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, info: SecretInfo) -> SecretOut:
        return cls(
            name=info.name,
            latest_version=info.latest_version,
            versions=info.versions,
            scope_required=info.scope_required,
            access_count=info.access_count,
            last_accessed_at=info.last_accessed_at,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


class SecretList(BaseModel):
    secrets: list[SecretOut]
    next_cursor: str | None


class SecretDeleted(BaseModel):
    name: str
    deleted_versions: int


@router.post("", status_code=201, response_model=SecretStored)
async def store_secret(
    body: SecretCreate,
    gov: GovernorDep,
    who: PrincipalDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> SecretStored:
    outcome = await gov.vault.store_secret(
        who,
        name=body.name,
        value=body.value,
        scope_required=body.scope_required,
        idempotency_key=idempotency_key,
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return SecretStored.of(outcome.value)


@router.get("", response_model=SecretList)
async def list_secrets(
    gov: GovernorDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> SecretList:
    page = await gov.vault.list_secrets(who, limit=limit, cursor=cursor)
    return SecretList(
        secrets=[SecretOut.of(info) for info in page.items], next_cursor=encode_cursor(page.next)
    )


@router.get("/{name}", response_model=SecretValue | SecretOut)
async def get_secret(
    name: SecretName,
    gov: GovernorDep,
    who: PrincipalDep,
    response: Response,
    session_id: SessionHeader = None,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> SecretValue | SecretOut:
    if session_id is None:
        if version is not None:
            raise InvalidRequest(
                "version selects a value to release: send X-Session-ID with it", field="version"
            )
        return SecretOut.of(await gov.vault.secret_info(who, name))
    released = await gov.vault.get_secret(who, name, session_id=session_id, version=version)
    response.headers["Cache-Control"] = "no-store"  # the middleware sets it too; a value must never lack it
    return SecretValue.of(released)


@router.delete("/{name}", response_model=SecretDeleted)
async def delete_secret(name: SecretName, gov: GovernorDep, who: PrincipalDep) -> SecretDeleted:
    deleted = await gov.vault.delete_secret(who, name)
    return SecretDeleted(name=name, deleted_versions=deleted)
