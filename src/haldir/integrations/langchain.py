"""LangChain: `governed(tool, …)` makes any `BaseTool` or `@tool` a governed local tool (same name,
description and args schema, sync and async), and `HaldirCallbackHandler` records a run's LLM and tool
events in the ledger. Needs `langchain-core` (`pip install 'haldir-client[langchain]'`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any
from uuid import UUID

try:
    from langchain_core.callbacks import (
        AsyncCallbackHandler,
        AsyncCallbackManagerForToolRun,
        BaseCallbackHandler,
        CallbackManagerForToolRun,
    )
    from langchain_core.outputs import LLMResult
    from langchain_core.tools import BaseTool, ToolException
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "haldir.integrations.langchain needs langchain-core: pip install 'haldir-client[langchain]'"
    ) from missing
from pydantic_core import to_jsonable_python

from haldir.client import AsyncHaldirClient, HaldirClient
from haldir.client._http import Amount, Json
from haldir.errors import HaldirError
from haldir.governed import agoverned_call, describe_refusal, governed_call

__all__ = [
    "AsyncHaldirCallbackHandler",
    "GovernedTool",
    "HaldirCallbackHandler",
    "HaldirToolException",
    "governed",
]

SINGLE_INPUT = "input"  # the argument name of a tool that takes one string (no args schema)
NO_CALLBACKS: dict[str, Any] = {"callbacks": []}  # the wrapped tool runs inside the governed tool's run


class HaldirToolException(ToolException):
    """Haldir refused a call: LangChain's tool error, carrying Haldir's `error` (and its `code`), so
    that with `handle_tool_error` the model reads why, and a program can still tell the cause."""

    def __init__(self, error: HaldirError) -> None:
        self.error = error
        self.code = error.code
        super().__init__(describe_refusal(error))


class GovernedTool(BaseTool):
    """A tool whose every call is a governed call of `session_id`: Haldir decides and reserves before
    it runs, records how it ended, and the model never sees an injected secret. Build it with
    `governed(...)`."""

    tool: BaseTool
    session_id: str
    client: HaldirClient | None = None
    aclient: AsyncHaldirClient | None = None
    cost_usd: Amount | None = None
    strict: bool = False

    def _run(self, *args: Any, run_manager: CallbackManagerForToolRun | None = None, **kwargs: Any) -> Any:
        if self.client is None:
            raise TypeError(f"governed tool {self.name!r} has no HaldirClient (client=) to run synchronously")
        arguments = _arguments(args, kwargs)
        try:
            return governed_call(
                self.client,
                session_id=self.session_id,
                tool=self.name,
                arguments=arguments,
                run=lambda given: self.tool.invoke(_input(given, args), NO_CALLBACKS),  # type: ignore[arg-type]
                cost_usd=self.cost_usd,
            )
        except HaldirError as refused:
            raise self._refusal(refused) from refused

    async def _arun(
        self, *args: Any, run_manager: AsyncCallbackManagerForToolRun | None = None, **kwargs: Any
    ) -> Any:
        if self.aclient is None:  # a blocking client in a worker thread
            return await super()._arun(*args, run_manager=run_manager, **kwargs)
        arguments = _arguments(args, kwargs)

        async def run(given: Json) -> Any:
            return await self.tool.ainvoke(_input(given, args), NO_CALLBACKS)  # type: ignore[arg-type]

        try:
            return await agoverned_call(
                self.aclient,
                session_id=self.session_id,
                tool=self.name,
                arguments=arguments,
                run=run,
                cost_usd=self.cost_usd,
            )
        except HaldirError as refused:
            raise self._refusal(refused) from refused

    def _refusal(self, refused: HaldirError) -> Exception:
        return refused if self.strict else HaldirToolException(refused)


def governed(
    tool: BaseTool,
    *,
    session_id: str,
    client: HaldirClient | None = None,
    aclient: AsyncHaldirClient | None = None,
    cost_usd: Amount | None = None,
    strict: bool = False,
    handle_tool_error: bool | None = None,
) -> GovernedTool:
    """`tool`, governed under `session_id`: the same name, description and args schema.

    Give `client` for sync invocation and `aclient` for async (with only `client`, async invocation runs
    it in a worker thread). `cost_usd` is the declared cost of each call (a tool_cost policy's higher cost
    wins). A refusal raises `HaldirToolException`, a `ToolException` holding Haldir's error; unless
    `handle_tool_error` is given, the governed tool handles tool errors (`True`), so the model reads
    why and the agent carries on. With `strict=True` a refusal raises Haldir's own error
    (`ToolDenied`, `BudgetExceeded`, `ApprovalRequired`, …) out of the agent instead.
    """
    if client is None and aclient is None:
        raise TypeError("governed() needs client= (HaldirClient) or aclient= (AsyncHaldirClient)")
    inner = tool.model_copy(update={"handle_tool_error": False, "handle_validation_error": False})
    return GovernedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        handle_tool_error=handle_tool_error
        if handle_tool_error is not None
        else (tool.handle_tool_error or True),
        tool=inner,
        session_id=session_id,
        client=client,
        aclient=aclient,
        cost_usd=cost_usd,
        strict=strict,
    )


def _arguments(args: Sequence[Any], kwargs: dict[str, Any]) -> Json:
    """The call's arguments as JSON, for Haldir's policies and ledger."""
    if args and not kwargs:
        return {SINGLE_INPUT: to_jsonable_python(args[0])}
    found: Json = to_jsonable_python(kwargs)
    return found


def _input(given: Json, args: Sequence[Any]) -> Any:
    """The wrapped tool's input from the arguments Haldir answered (secrets substituted)."""
    return given[SINGLE_INPUT] if args and set(given) == {SINGLE_INPUT} else given


class HaldirCallbackHandler(BaseCallbackHandler):
    """Records each LLM call and tool run of a LangChain run as a ledger entry of `session_id`
    (`POST /v1/audit`): `llm.call` and `tool.run`, ok or error, with run ids, the model's token usage
    and SHA-256 digests of tool outputs; never prompts, messages or outputs themselves."""

    raise_error = False  # a ledger that cannot be reached must not stop the agent; the governed tools do

    def __init__(self, client: HaldirClient, *, session_id: str) -> None:
        self.client = client
        self.session_id = session_id
        self._tools: dict[UUID, str] = {}

    def on_tool_start(
        self, serialized: dict[str, Any], input_str: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._tools[run_id] = str((serialized or {}).get("name") or kwargs.get("name") or "tool")

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **_: Any) -> None:
        self._log(*_tool_event(self._tools.pop(run_id, "tool"), output, None, run_id, parent_run_id))

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **_: Any
    ) -> None:
        self._log(*_tool_event(self._tools.pop(run_id, "tool"), None, error, run_id, parent_run_id))

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **_: Any
    ) -> None:
        self._log(*_llm_event(response, None, run_id, parent_run_id))

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **_: Any
    ) -> None:
        self._log(*_llm_event(None, error, run_id, parent_run_id))

    def _log(self, tool: str, action: str, status: str, details: Json) -> None:
        self.client.log_action(self.session_id, tool, action, 0, details, status=status)


class AsyncHaldirCallbackHandler(AsyncCallbackHandler):
    """`HaldirCallbackHandler` for async runs, over an `AsyncHaldirClient`."""

    raise_error = False

    def __init__(self, client: AsyncHaldirClient, *, session_id: str) -> None:
        self.client = client
        self.session_id = session_id
        self._tools: dict[UUID, str] = {}

    async def on_tool_start(
        self, serialized: dict[str, Any], input_str: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._tools[run_id] = str((serialized or {}).get("name") or kwargs.get("name") or "tool")

    async def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **_: Any
    ) -> None:
        await self._log(*_tool_event(self._tools.pop(run_id, "tool"), output, None, run_id, parent_run_id))

    async def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **_: Any
    ) -> None:
        await self._log(*_tool_event(self._tools.pop(run_id, "tool"), None, error, run_id, parent_run_id))

    async def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **_: Any
    ) -> None:
        await self._log(*_llm_event(response, None, run_id, parent_run_id))

    async def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **_: Any
    ) -> None:
        await self._log(*_llm_event(None, error, run_id, parent_run_id))

    async def _log(self, tool: str, action: str, status: str, details: Json) -> None:
        await self.client.log_action(self.session_id, tool, action, 0, details, status=status)


def _ids(run_id: UUID, parent_run_id: UUID | None) -> Json:
    return {
        "framework": "langchain",
        "run_id": str(run_id),
        "parent_run_id": None if parent_run_id is None else str(parent_run_id),
    }


def _tool_event(
    name: str, output: Any, error: BaseException | None, run_id: UUID, parent_run_id: UUID | None
) -> tuple[str, str, str, Json]:
    details = _ids(run_id, parent_run_id)
    if error is not None:
        details["error_type"] = type(error).__name__
        code = getattr(error, "code", None)
        if isinstance(code, str):
            details["haldir_code"] = code
        return name, "tool.run", "error", details
    content = getattr(output, "content", output)
    details["output_sha256"] = hashlib.sha256(str(content).encode()).hexdigest()
    status = getattr(output, "status", "success")
    return name, "tool.run", "error" if status == "error" else "ok", details


def _llm_event(
    response: LLMResult | None, error: BaseException | None, run_id: UUID, parent_run_id: UUID | None
) -> tuple[str, str, str, Json]:
    details = _ids(run_id, parent_run_id)
    if error is not None or response is None:
        details["error_type"] = type(error).__name__
        return "llm", "llm.call", "error", details
    output = response.llm_output or {}
    details["generations"] = sum(len(batch) for batch in response.generations)
    usage = output.get("token_usage") or output.get("usage")
    if isinstance(usage, dict):
        details["token_usage"] = to_jsonable_python(usage)
    model = output.get("model_name") or output.get("model")
    return str(model) if model else "llm", "llm.call", "ok", details
