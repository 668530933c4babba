"""A governed call of a local tool through the SDK, for any agent framework: begin (Haldir decides and
reserves), run the tool with the arguments Haldir answered (secrets substituted), finish (ok or error),
and hand back the result with every injected secret value scrubbed out, so the model never sees one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from traceback import format_exception
from typing import Any, TypeVar

from haldir.client import AsyncHaldirClient, HaldirClient
from haldir.client._http import Amount, Json
from haldir.core.tools import injected_values, scrub
from haldir.errors import ApprovalRequired, HaldirError

T = TypeVar("T")
MAX_ERROR_CHARS = 1000

log = logging.getLogger("haldir.governed")


def governed_call(
    client: HaldirClient,
    *,
    session_id: str,
    tool: str,
    arguments: Json,
    run: Callable[[Json], T],
    cost_usd: Amount | None = None,
) -> T:
    """Run `run(arguments)` as one governed call of the local tool `tool`; its result, scrubbed.

    A refusal raises Haldir's error (`ToolDenied`, `NotAllowed`, `BudgetExceeded`, `RateLimited`,
    `ApprovalRequired` with `.details["approval_id"]`, …) and `run` is not called. An exception of `run`
    is recorded as the call's error (its cost released) and raised again as it is, unless its text holds
    an injected secret value: frameworks show a tool's exception text to the model, so that one is raised
    as `ScrubbedToolError`. The result's strings (also inside dicts, lists and tuples) have each injected
    secret value replaced by `[secret:NAME]`.
    """
    begun = client.begin_tool_call(session_id, tool, arguments, cost_usd=cost_usd)
    secrets = _secrets(arguments, begun)
    started = time.perf_counter()
    try:
        result = run(begun["arguments"])
    except BaseException as exc:
        _finish(client, begun, _failure(exc, secrets), started)
        _raise_scrubbed(exc, secrets)
        raise
    _finish(client, begun, None, started)
    return scrub_result(result, secrets)


async def agoverned_call(
    client: AsyncHaldirClient,
    *,
    session_id: str,
    tool: str,
    arguments: Json,
    run: Callable[[Json], Awaitable[T]],
    cost_usd: Amount | None = None,
) -> T:
    """`governed_call` for asyncio: `run` is awaited. A cancelled call is left to the server's sweep,
    which records its outcome as unknown."""
    begun = await client.begin_tool_call(session_id, tool, arguments, cost_usd=cost_usd)
    secrets = _secrets(arguments, begun)
    started = time.perf_counter()
    try:
        result = await run(begun["arguments"])
    except Exception as exc:
        await _afinish(client, begun, _failure(exc, secrets), started)
        _raise_scrubbed(exc, secrets)
        raise
    await _afinish(client, begun, None, started)
    return scrub_result(result, secrets)


async def afinish_call(
    client: AsyncHaldirClient, begun: Json, *, error: BaseException | None, started: float
) -> None:
    """Record how a call begun with `begin_tool_call` ended (`error` None for ok; `started` a
    `time.perf_counter()` reading), for adapters whose framework runs the tool between two hooks of its
    own instead of inside `agoverned_call`. A failure to record it is logged, not raised."""
    await _afinish(client, begun, None if error is None else _failure(error, {}), started)


def describe_refusal(error: HaldirError) -> str:
    """What a model reads of a refusal, in every integration: Haldir's code and message, and what to do
    when the call is held for approval."""
    text = f"Haldir refused this call ({error.code}): {error.message}"
    if isinstance(error, ApprovalRequired):
        text += f" Approval {error.details.get('approval_id')} is pending; retry once a person approves it."
    return text


def scrub_result(result: T, secrets: Mapping[str, str]) -> T:
    """`result` with each secret value in its strings replaced by `[secret:NAME]`; a tuple stays one
    (LangChain's content-and-artifact answers are tuples), objects of other types are returned as they are."""
    if not secrets:
        return result
    if isinstance(result, tuple):
        cleaned: Any = tuple(scrub_result(item, secrets) for item in result)
        return cleaned  # type: ignore[no-any-return]  # a tuple of the same shape
    return scrub(result, secrets)


class ScrubbedToolError(Exception):
    """The tool raised an exception whose text held an injected secret value: this is its text with each
    value replaced by `[secret:NAME]`, and the original exception is its `__cause__`."""


def _raise_scrubbed(exc: BaseException, secrets: Mapping[str, str]) -> None:
    """Raise `ScrubbedToolError` from `exc` when its text (its chain's included) holds a secret value."""
    if secrets and isinstance(exc, Exception):
        text = "".join(format_exception(exc))
        if any(value in text for value in secrets.values()):
            raise ScrubbedToolError(scrub(str(exc), secrets)) from exc


def _secrets(arguments: Json, begun: Json) -> dict[str, str]:
    """The values of the secrets Haldir put into the arguments, by name."""
    if not begun.get("secrets"):
        return {}
    found = injected_values(arguments, begun["arguments"])
    return {name: value for name, value in found.items() if name in begun["secrets"]}


def _failure(exc: BaseException, secrets: Mapping[str, str]) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return scrub(text, secrets)[:MAX_ERROR_CHARS]


def _finish(client: HaldirClient, begun: Json, error: str | None, started: float) -> None:
    """Record the outcome, or hand it to the client's background thread (`background_finish`); a
    failure to record it is logged, not raised: the tool has run, and the server's sweep records a
    call left open as outcome unknown."""
    outcome = _outcome(error, started)
    if _handed_off(client, begun, outcome):
        return
    try:
        client.finish_tool_call(begun["call_id"], **outcome)
    except HaldirError as exc:
        _unrecorded(begun, exc)


async def _afinish(client: AsyncHaldirClient, begun: Json, error: str | None, started: float) -> None:
    outcome = _outcome(error, started)
    if _handed_off(client, begun, outcome):
        return
    try:
        await client.finish_tool_call(begun["call_id"], **outcome)
    except HaldirError as exc:
        _unrecorded(begun, exc)


def _handed_off(client: HaldirClient | AsyncHaldirClient, begun: Json, outcome: dict[str, Any]) -> bool:
    """With `background_finish`, hand the outcome to the client's background sender; whether it did."""
    if not client.background_finish:
        return False
    client.finish_tool_call_soon(begun["call_id"], **outcome).add_done_callback(
        lambda done: _sent(begun, done)
    )
    return True


def _sent(begun: Json, done: Future[Json] | asyncio.Task[Json]) -> None:
    """How a background finish ended: a failure is logged (and so retrieved), as a waited one's is."""
    if done.cancelled():
        _unrecorded(begun, "cancelled")
    elif isinstance(failed := done.exception(), HaldirError):
        _unrecorded(begun, failed)
    elif failed is not None:
        log.error("haldir: recording the outcome of call %s failed", begun["call_id"], exc_info=failed)


def _outcome(error: str | None, started: float) -> dict[str, Any]:
    return {"status": "ok" if error is None else "error", "error": error, "latency_ms": _ms(started)}


def _unrecorded(begun: Json, exc: HaldirError | str) -> None:
    log.warning("haldir: could not record the outcome of call %s: %s", begun["call_id"], exc)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
