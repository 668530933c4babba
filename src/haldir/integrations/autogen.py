"""AutoGen: `governed(tool, …)` makes an `autogen_core` `FunctionTool` (or any `BaseTool`) a governed
local tool with the same name, description and args schema, for an `AssistantAgent` or any caller of
`run_json`. Needs `autogen-agentchat` and `autogen-core` 0.7 (`pip install 'haldir-client[autogen]'`)."""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from autogen_core import CancellationToken
    from autogen_core.tools import BaseTool, ToolSchema
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "haldir.integrations.autogen needs autogen-agentchat and autogen-core 0.7: "
        "pip install 'haldir-client[autogen]'"
    ) from missing
from pydantic import BaseModel

from haldir.client import AsyncHaldirClient, HaldirClient
from haldir.client._http import Amount, Json
from haldir.errors import HaldirError
from haldir.governed import ScrubbedToolError, agoverned_call, describe_refusal, governed_call

__all__ = ["GovernedTool", "HaldirToolError", "ScrubbedToolError", "governed"]


class HaldirToolError(Exception):
    """Haldir refused a call. AutoGen's workbench turns a tool's exception into an error result whose
    content is the exception's text, so the model reads `describe_refusal(error)`; a caller of `run_json`
    catches it and finds Haldir's error in `.error` (and `__cause__`) and its code in `.code`."""

    def __init__(self, error: HaldirError) -> None:
        self.error = error
        self.code = error.code
        super().__init__(describe_refusal(error))


class GovernedTool(BaseTool[BaseModel, BaseModel]):
    """A tool whose every call is a governed call of `session_id`: Haldir decides and reserves before
    the wrapped tool runs, records how it ended, and the model never sees an injected secret. Build it
    with `governed(...)`."""

    def __init__(
        self,
        tool: BaseTool[Any, Any],
        *,
        session_id: str,
        client: HaldirClient | None,
        aclient: AsyncHaldirClient | None,
        cost_usd: Amount | None,
        strict: bool,
    ) -> None:
        super().__init__(tool.args_type(), tool.return_type(), tool.name, tool.description)
        self.tool = tool
        self.session_id = session_id
        self.client = client
        self.aclient = aclient
        self.cost_usd = cost_usd
        self.strict = strict

    @property
    def schema(self) -> ToolSchema:
        return self.tool.schema

    def return_value_as_string(self, value: Any) -> str:
        return self.tool.return_value_as_string(value)

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        if cancellation_token.is_cancelled():
            raise asyncio.CancelledError(f"tool {self.name!r} was cancelled before Haldir was asked")
        arguments: Json = args.model_dump(mode="json")
        try:
            if self.aclient is not None:
                return await agoverned_call(
                    self.aclient,
                    session_id=self.session_id,
                    tool=self.name,
                    arguments=arguments,
                    run=lambda given: self._run_tool(arguments, given, cancellation_token),
                    cost_usd=self.cost_usd,
                )
            if self.client is not None:
                return await self._run_blocking(self.client, arguments, cancellation_token)
        except HaldirError as refused:
            if self.strict:
                raise
            raise HaldirToolError(refused) from refused
        raise TypeError(f"governed tool {self.name!r} has no client (aclient= or client=)")

    async def _run_tool(self, arguments: Json, given: Json, cancellation_token: CancellationToken) -> Any:
        """The wrapped tool's `run` (not `run_json`, whose event log would hold the substituted secrets),
        on the arguments Haldir answered."""
        return await self.tool.run(self.tool.args_type().model_validate(given), cancellation_token)

    async def _run_blocking(
        self, client: HaldirClient, arguments: Json, cancellation_token: CancellationToken
    ) -> Any:
        """The governed call over the blocking client in a worker thread; the tool runs on this loop."""
        loop = asyncio.get_running_loop()

        def run(given: Json) -> Any:
            ran = asyncio.run_coroutine_threadsafe(self._run_tool(arguments, given, cancellation_token), loop)
            return ran.result()

        return await asyncio.to_thread(
            governed_call,
            client,
            session_id=self.session_id,
            tool=self.name,
            arguments=arguments,
            run=run,
            cost_usd=self.cost_usd,
        )


def governed(
    tool: BaseTool[Any, Any],
    *,
    session_id: str,
    client: HaldirClient | None = None,
    aclient: AsyncHaldirClient | None = None,
    cost_usd: Amount | None = None,
    strict: bool = False,
) -> GovernedTool:
    """`tool`, governed under `session_id`: the same name, description and args schema.

    Give `aclient` (AutoGen runs tools on its event loop), or `client`, whose calls then run in a worker
    thread. `cost_usd` is the declared cost of each call (a tool_cost policy's higher cost wins). A
    refusal raises `HaldirToolError`, which an `AssistantAgent` hands the model as an error result;
    with `strict=True` it raises Haldir's own error (`ToolDenied`, `BudgetExceeded`,
    `ApprovalRequired`, …) instead, which an `AssistantAgent` also catches (see docs/integrations/autogen.md).
    """
    if client is None and aclient is None:
        raise TypeError("governed() needs aclient= (AsyncHaldirClient) or client= (HaldirClient)")
    return GovernedTool(
        tool, session_id=session_id, client=client, aclient=aclient, cost_usd=cost_usd, strict=strict
    )
