"""Payments over HTTP: authorize an amount against a session's budget, capture or void it, read them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from haldir.core.money import format_micros
from haldir.core.pagination import MAX_PAGE, encode_cursor
from haldir.core.payments import CURRENCY, Payment
from haldir.governor.budgets import Authorization
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import APPROVAL_RESPONSE, ERROR_RESPONSES
from haldir.http.routes.keys import IdempotencyKey
from haldir.http.schemas import Money, Timestamp

router = APIRouter(prefix="/v1/payments", tags=["payments"], responses=ERROR_RESPONSES)


class AuthorizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(max_length=100)
    amount: Money
    currency: str = Field(default=CURRENCY, max_length=10, description="Only `USD`.")
    description: str = Field(default="", max_length=500)


class Authorized(BaseModel):
    authorization_id: str
    amount: str
    remaining_budget: str
    status: str

    @classmethod
    def of(cls, authorization: Authorization) -> Authorized:
        payment = authorization.payment
        return cls(
            authorization_id=payment.payment_id,
            amount=format_micros(payment.amount_micros),
            remaining_budget=format_micros(authorization.remaining_micros),
            status=payment.status,
        )


class CaptureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Money | None = Field(default=None, description="Capture less than authorized; default all of it.")


class VoidRequest(BaseModel):
    """No fields: a void takes nothing but the payment. An empty object or no body at all."""

    model_config = ConfigDict(extra="forbid")


class PaymentOut(BaseModel):
    authorization_id: str
    session_id: str
    amount: str
    captured_amount: str | None
    reported: str = Field(description="Costs logged against this authorization with POST /v1/audit.")
    currency: str
    description: str
    status: str
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, payment: Payment) -> PaymentOut:
        captured = payment.captured_micros
        return cls(
            authorization_id=payment.payment_id,
            session_id=payment.session_id,
            amount=format_micros(payment.amount_micros),
            captured_amount=None if captured is None else format_micros(captured),
            reported=format_micros(payment.reported_micros),
            currency=payment.currency,
            description=payment.description,
            status=payment.status,
            created_at=payment.created_at,
            updated_at=payment.updated_at,
        )


class PaymentList(BaseModel):
    payments: list[PaymentOut]
    next_cursor: str | None


@router.post("/authorize", status_code=201, response_model=Authorized, responses=APPROVAL_RESPONSE)
async def authorize_payment(
    body: AuthorizeRequest,
    gov: GovernorDep,
    who: PrincipalDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Authorized:
    outcome = await gov.budgets.authorize_payment(
        who,
        session_id=body.session_id,
        amount=body.amount,
        currency=body.currency,
        description=body.description,
        idempotency_key=idempotency_key,
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return Authorized.of(outcome.value)


@router.post("/{authorization_id}/capture", response_model=PaymentOut)
async def capture_payment(
    authorization_id: str, gov: GovernorDep, who: PrincipalDep, body: CaptureRequest | None = None
) -> PaymentOut:
    amount = None if body is None else body.amount
    return PaymentOut.of(await gov.budgets.capture_payment(who, authorization_id, amount=amount))


@router.post("/{authorization_id}/void", response_model=PaymentOut)
async def void_payment(
    authorization_id: str, gov: GovernorDep, who: PrincipalDep, body: VoidRequest | None = None
) -> PaymentOut:
    return PaymentOut.of(await gov.budgets.void_payment(who, authorization_id))


@router.get("/{authorization_id}", response_model=PaymentOut)
async def get_payment(authorization_id: str, gov: GovernorDep, who: PrincipalDep) -> PaymentOut:
    return PaymentOut.of(await gov.budgets.get_payment(who, authorization_id))


@router.get("", response_model=PaymentList)
async def list_payments(
    gov: GovernorDep,
    who: PrincipalDep,
    session_id: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> PaymentList:
    page = await gov.budgets.list_payments(who, session_id=session_id, limit=limit, cursor=cursor)
    return PaymentList(
        payments=[PaymentOut.of(payment) for payment in page.items], next_cursor=encode_cursor(page.next)
    )
