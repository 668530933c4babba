"""API keys of the caller's tenant: create (shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, ConfigDict, Field

from haldir.core.keys import ApiKey
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES
from haldir.http.schemas import OptionalTimestamp, Timestamp

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1, description="`*` or `<resource>:read|write`")


class KeyOut(BaseModel):
    prefix: str
    tenant_id: str
    name: str
    scopes: list[str]
    created_at: Timestamp
    revoked_at: OptionalTimestamp = None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            prefix=key.prefix,
            tenant_id=key.tenant_id,
            name=key.name,
            scopes=sorted(key.scopes),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str | None = Field(description="The key itself, shown once; null when an idempotent replay answers.")


class KeyList(BaseModel):
    keys: list[KeyOut]


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(
    body: KeyCreate,
    gov: GovernorDep,
    who: PrincipalDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> KeyCreated:
    outcome = await gov.keys.create_key(
        who, name=body.name, scopes=body.scopes, idempotency_key=idempotency_key
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    created = outcome.value
    return KeyCreated(**KeyOut.of(created.key).model_dump(), key=created.value)


class CurrentKey(BaseModel):
    prefix: str | None
    tenant_id: str
    scopes: list[str]


@router.get("/current", response_model=CurrentKey)
async def current_key(who: PrincipalDep) -> CurrentKey:
    """The key this request presented: its tenant and scopes. Any valid key may ask (`haldir login` does)."""
    return CurrentKey(prefix=who.key_prefix, tenant_id=who.tenant_id, scopes=sorted(who.scopes))


@router.get("", response_model=KeyList)
async def list_keys(gov: GovernorDep, who: PrincipalDep) -> KeyList:
    return KeyList(keys=[KeyOut.of(key) for key in await gov.keys.list_keys(who)])


@router.delete("/{prefix}", response_model=KeyOut)
async def revoke_key(prefix: str, gov: GovernorDep, who: PrincipalDep) -> KeyOut:
    return KeyOut.of(await gov.keys.revoke_key(who, prefix))
