"""CrewAI: `governed(tool, …)` makes any CrewAI `BaseTool` or `@tool` a governed local tool (same name,
description and args schema); a refusal is CrewAI's `ToolFailure`, with Haldir's code, which the agent
reads and the crew records. Needs crewai 1.15.9 or later (`pip install 'haldir-client[crewai]'`)."""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from crewai.tools import BaseTool, ToolFailure
    from crewai.utilities.string_utils import sanitize_tool_name
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "haldir.integrations.crewai needs crewai 1.15.9 or later: pip install 'haldir-client[crewai]'"
    ) from missing
from pydantic import Field
from pydantic_core import to_jsonable_python

from haldir.client import AsyncHaldirClient, HaldirClient
from haldir.client._http import Amount, Json
from haldir.core.tools import injected_values, scrub
from haldir.errors import ApprovalRequired, HaldirError, RateLimited
from haldir.governed import agoverned_call, describe_refusal, governed_call

__all__ = ["GovernedTool", "governed", "refusal"]


class ToolFailureReturned(Exception):
    """The wrapped tool returned a `ToolFailure`: raised through the governed call so that Haldir records
    the call as an error (its cost released), then returned to CrewAI as the tool returned it."""

    def __init__(self, failure: ToolFailure) -> None:
        self.failure = failure
        super().__init__(failure.as_agent_message())


class GovernedTool(BaseTool):  # type: ignore[misc]  # crewai is not installed where mypy runs
    """A tool whose every call is a governed call of `session_id`, under the tool's sanitized name (the
    name the model calls it by): Haldir decides and reserves before it runs, records how it ended, and the
    model never sees an injected secret. Build it with `governed(...)`."""

    tool: BaseTool
    session_id: str
    client: HaldirClient | None = Field(default=None, exclude=True)
    aclient: AsyncHaldirClient | None = Field(default=None, exclude=True)
    cost_usd: Amount | None = None

    def _run(self, **kwargs: Any) -> Any:
        if self.client is None:
            raise TypeError(f"governed tool {self.name!r} has no HaldirClient (client=) to run synchronously")
        arguments: Json = to_jsonable_python(kwargs)

        def run(given: Json) -> Any:
            return _returned(self.tool.run(**given), arguments, given)

        try:
            return governed_call(
                self.client,
                session_id=self.session_id,
                tool=sanitize_tool_name(self.name),
                arguments=arguments,
                run=run,
                cost_usd=self.cost_usd,
            )
        except HaldirError as refused:
            return refusal(refused)
        except ToolFailureReturned as failed:
            return failed.failure

    async def _arun(self, **kwargs: Any) -> Any:
        if self.aclient is None:  # a blocking client in a worker thread
            return await asyncio.to_thread(self._run, **kwargs)
        arguments: Json = to_jsonable_python(kwargs)

        async def run(given: Json) -> Any:
            return _returned(await self.tool.arun(**given), arguments, given)

        try:
            return await agoverned_call(
                self.aclient,
                session_id=self.session_id,
                tool=sanitize_tool_name(self.name),
                arguments=arguments,
                run=run,
                cost_usd=self.cost_usd,
            )
        except HaldirError as refused:
            return refusal(refused)
        except ToolFailureReturned as failed:
            return failed.failure

    def format_output_for_agent(self, raw_result: Any) -> str:
        """The wrapped tool's rendering of its result for the agent."""
        rendered: str = self.tool.format_output_for_agent(raw_result)
        return rendered


def governed(
    tool: BaseTool,
    *,
    session_id: str,
    client: HaldirClient | None = None,
    aclient: AsyncHaldirClient | None = None,
    cost_usd: Amount | None = None,
) -> GovernedTool:
    """`tool`, governed under `session_id`: the same name, description, args and result schemas,
    `result_as_answer`, `max_usage_count` and `tool_failure_policy`.

    Give `client` for `run` (what a crew's agents call) and `aclient` for `arun` (with only `client`,
    `arun` runs the call in a worker thread). `cost_usd` is the declared cost of each call (a tool_cost
    policy's higher cost wins). A refusal is returned as a `ToolFailure` (see `refusal`). CrewAI never
    answers a governed tool's call from its tool cache: each call is Haldir's to decide and record.
    """
    if client is None and aclient is None:
        raise TypeError("governed() needs client= (HaldirClient) or aclient= (AsyncHaldirClient)")
    return GovernedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        result_schema=tool.result_schema,
        env_vars=tool.env_vars,
        result_as_answer=tool.result_as_answer,
        max_usage_count=tool.max_usage_count,  # counted here, so refused calls count too
        tool_failure_policy=tool.tool_failure_policy,
        cache_function=_never_cached,
        tool=tool.model_copy(update={"max_usage_count": None}),
        session_id=session_id,
        client=client,
        aclient=aclient,
        cost_usd=cost_usd,
    )


def refusal(error: HaldirError) -> ToolFailure:
    """CrewAI's failure of a refused call: the agent reads `describe_refusal(error)` (CrewAI appends
    `(code: <code>)`), and the crew records Haldir's code, its details (`approval_id` of a held call) and
    whether a retry may succeed (a held or rate-limited call)."""
    return ToolFailure(
        message=describe_refusal(error),
        code=error.code,
        retryable=isinstance(error, ApprovalRequired | RateLimited),
        details=to_jsonable_python(error.details),
    )


def _returned(result: Any, arguments: Json, given: Json) -> Any:
    """`result`; a `ToolFailure` is raised instead, its message and details scrubbed of the secret values
    Haldir put into `given`, so that the call is recorded as an error and the model never reads one."""
    if not isinstance(result, ToolFailure):
        return result
    secrets = injected_values(arguments, given)
    raise ToolFailureReturned(
        result.model_copy(
            update={"message": scrub(result.message, secrets), "details": scrub(result.details, secrets)}
        )
    )


def _never_cached(_arguments: Any = None, _result: Any = None) -> bool:
    return False
