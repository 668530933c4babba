"""OpenAI Agents SDK: `governed(tool, …)` makes a `FunctionTool` (what `@function_tool` makes) a governed
local tool, and `HaldirGuardrails` governs function tools through the SDK's tool guardrails instead,
without wrapping them. Needs `openai-agents` (`pip install 'haldir-client[openai-agents]'`)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import time
from collections.abc import Mapping
from typing import Any

try:
    from agents import (
        AgentsException,
        FunctionTool,
        ToolGuardrailFunctionOutput,
        ToolInputGuardrail,
        ToolInputGuardrailData,
        ToolOutputGuardrail,
        ToolOutputGuardrailData,
        default_tool_error_function,
    )
    from agents.run_context import RunContextWrapper
    from agents.tool import (
        FunctionToolCustomDataContext,
        FunctionToolCustomDataExtractor,
        maybe_invoke_function_tool_failure_error_function,
        set_function_tool_failure_error_function,
    )
    from agents.tool_context import ToolContext
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "haldir.integrations.openai_agents needs openai-agents: pip install 'haldir-client[openai-agents]'"
    ) from missing

from haldir.client import AsyncHaldirClient
from haldir.client._http import Amount, Json
from haldir.core.tools import find_secret_refs
from haldir.errors import HaldirError
from haldir.governed import afinish_call, agoverned_call, describe_refusal

__all__ = ["HaldirGuardrails", "HaldirToolError", "governed"]

RAW_INPUT = "input"  # the argument name Haldir sees for a call whose arguments are not a JSON object


class HaldirToolError(AgentsException):
    """Haldir refused a call in strict mode: an Agents SDK error, so `Runner.run` raises it as it is
    (other exceptions of a tool reach the program as `UserError`). It carries Haldir's `error`
    (also its `__cause__`) and its `code`."""

    def __init__(self, error: HaldirError) -> None:
        self.error = error
        self.code = error.code
        super().__init__(describe_refusal(error))


def governed(
    tool: FunctionTool,
    *,
    session_id: str,
    aclient: AsyncHaldirClient,
    cost_usd: Amount | None = None,
    strict: bool = False,
) -> FunctionTool:
    """`tool`, governed under `session_id`: a `FunctionTool` with the same name, description, parameters
    schema and settings (guardrails, approval, timeout, failure handling), whose every call is a governed
    call (`haldir.governed.agoverned_call`).

    `cost_usd` is the declared cost of each call (a tool_cost policy's higher cost wins). A refusal is the
    call's output, `describe_refusal`'s text, so the model reads why and the run carries on; with
    `strict=True` it raises `HaldirToolError` out of `Runner.run`. A program finds a refusal's code,
    message and details in the output item's `custom_data["haldir"]` (the model never sees them there).
    An exception of the tool is recorded as the call's error and then handled as the tool would have
    handled it (its `failure_error_function`).
    """
    inner = copy.copy(tool)  # FunctionTool's copy rebinds the invoker to the copy ...
    set_function_tool_failure_error_function(inner, None)  # ... which raises, so an error is recorded
    refusals: dict[str, HaldirError] = {}  # by the SDK's tool call id, until its output item is made

    async def invoke(ctx: ToolContext[Any], raw: str) -> Any:
        arguments = _arguments(raw)

        async def run(given: Json) -> Any:
            return await inner.on_invoke_tool(ctx, raw if given == arguments else _raw(given, raw))

        try:
            return await agoverned_call(
                aclient,
                session_id=session_id,
                tool=tool.name,
                arguments=arguments,
                run=run,
                cost_usd=cost_usd,
            )
        except HaldirError as refused:
            if strict:
                raise HaldirToolError(refused) from refused
            refusals[ctx.tool_call_id] = refused
            return describe_refusal(refused)
        except Exception as failed:
            handled = await maybe_invoke_function_tool_failure_error_function(
                function_tool=tool, context=ctx, error=failed
            )
            if handled is None:
                raise
            return handled

    async def custom_data(data: FunctionToolCustomDataContext) -> Mapping[str, Any] | None:
        found = await _extract(tool.custom_data_extractor, data)
        refused = refusals.pop(data.tool_context.tool_call_id, None)
        if refused is None:
            return found
        return {
            **(found or {}),
            "haldir": {"code": refused.code, "message": refused.message, **refused.details},
        }

    return dataclasses.replace(tool, on_invoke_tool=invoke, custom_data_extractor=custom_data)


class HaldirGuardrails:
    """Governs function tools through the SDK's tool guardrails, without wrapping them: `input` begins
    each call with Haldir (a refusal rejects it, so the tool does not run and the model reads why),
    `output` records it as ended ok, and `failure_error_function` records a tool's exception as its error.

        guard = HaldirGuardrails(haldir, session_id=session_id)

        @function_tool(
            tool_input_guardrails=[guard.input],
            tool_output_guardrails=[guard.output],
            failure_error_function=guard.failure_error_function,
        )
        async def forecast(city: str) -> str: ...

    A guardrail cannot change a call's arguments, so Haldir cannot inject secrets this way: a call whose
    arguments hold `{{secret:NAME}}` is rejected (use `governed(...)` for such tools). Results are not
    scrubbed for the same reason: no secret went in.
    """

    def __init__(
        self,
        aclient: AsyncHaldirClient,
        *,
        session_id: str,
        cost_usd: Amount | None = None,
        strict: bool = False,
    ) -> None:
        self.aclient = aclient
        self.session_id = session_id
        self.cost_usd = cost_usd
        self.strict = strict
        self._open: dict[str, tuple[Json, float]] = {}  # by the SDK's tool call id
        self.input: ToolInputGuardrail[Any] = ToolInputGuardrail(self._begin, name="haldir")
        self.output: ToolOutputGuardrail[Any] = ToolOutputGuardrail(self._finish, name="haldir")

    async def _begin(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        if ctx.tool_call_id in self._open:  # already admitted (guardrails run before and after approval)
            return ToolGuardrailFunctionOutput.allow()
        arguments = _arguments(ctx.tool_arguments)
        if find_secret_refs(arguments):
            return ToolGuardrailFunctionOutput.reject_content(
                "Haldir cannot inject secrets through a tool guardrail; this tool must be governed "
                "with haldir.integrations.openai_agents.governed(...) to use {{secret:NAME}}."
            )
        try:
            begun = await self.aclient.begin_tool_call(
                self.session_id, ctx.tool_name, arguments, cost_usd=self.cost_usd
            )
        except HaldirError as refused:
            if self.strict:
                raise HaldirToolError(refused) from refused
            return ToolGuardrailFunctionOutput.reject_content(describe_refusal(refused), output_info=refused)
        self._open[ctx.tool_call_id] = (begun, time.perf_counter())
        return ToolGuardrailFunctionOutput.allow(output_info={"call_id": begun["call_id"]})

    async def _finish(self, data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        await self._close(data.context.tool_call_id, None)
        return ToolGuardrailFunctionOutput.allow()

    async def failure_error_function(self, ctx: RunContextWrapper[Any], error: Exception) -> str:
        """A tool's `failure_error_function`: records the exception as the call's error, then answers
        the model what the SDK's default does (which hides the exception's text)."""
        if isinstance(ctx, ToolContext):
            await self._close(ctx.tool_call_id, error)
        return default_tool_error_function(ctx, error)

    async def _close(self, tool_call_id: str, error: Exception | None) -> None:
        opened = self._open.pop(tool_call_id, None)
        if opened is not None:
            await afinish_call(self.aclient, opened[0], error=error, started=opened[1])


async def _extract(
    extractor: FunctionToolCustomDataExtractor | None, data: FunctionToolCustomDataContext
) -> Mapping[str, Any] | None:
    """The wrapped tool's own custom data, if it has an extractor (sync or async)."""
    if extractor is None:
        return None
    found = extractor(data)
    return await found if inspect.isawaitable(found) else found


def _arguments(raw: str) -> Json:
    """The call's arguments as Haldir sees them: the model's JSON object, or `{"input": raw}`."""
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {RAW_INPUT: raw}


def _raw(given: Json, raw: str) -> str:
    """The tool's input from the arguments Haldir answered (secrets substituted) for its input `raw`."""
    return str(given[RAW_INPUT]) if _arguments(raw) == {RAW_INPUT: raw} else json.dumps(given)
