"""The gateway's two backends: in-process (`/mcp/gateway` on the API server) and over HTTP (`haldir proxy`).

Both act for one session and answer with the REST API's bodies, so the gateway cannot tell them apart.
"""

from __future__ import annotations

from typing import Any

from haldir.client import AsyncHaldirClient
from haldir.client.money import plain
from haldir.core.keys import Principal
from haldir.governor import Governor
from haldir.http.routes.proxy import ToolList, ToolOut
from haldir.mcp.backends import Json, LocalBackend
from haldir.proxy.service import ProxyService


class LocalGateway(LocalBackend):
    """The governor and proxy service of this process, acting for `principal` and `session_id`."""

    def __init__(
        self, governor: Governor, proxy: ProxyService, principal: Principal, session_id: str
    ) -> None:
        super().__init__(governor, principal)
        self._proxy = proxy
        self._principal = principal
        self.session_id = session_id

    async def list_proxy_tools(self) -> Json:
        tools = await self._proxy.tools(self._principal)
        body: Json = ToolList(tools=[ToolOut.of(tool) for tool in tools]).model_dump(mode="json")
        return body

    async def call_tool(self, *, session_id: str, tool: str, arguments: dict[str, Any]) -> Json:
        return await self._proxy.call_tool(
            self._principal, session_id=session_id, tool=tool, arguments=arguments
        )


class RemoteGateway:
    """A Haldir server's REST API, through the SDK, for `session_id`; the server enforces everything.
    Its answers are the bodies the server sent: the SDK's `Decimal` money back to the exact strings."""

    def __init__(self, client: AsyncHaldirClient, session_id: str) -> None:
        self._client = client
        self.session_id = session_id

    async def list_proxy_tools(self) -> Json:
        return plain(await self._client.list_proxy_tools())

    async def call_tool(self, *, session_id: str, tool: str, arguments: dict[str, Any]) -> Json:
        return plain(await self._client.call_tool(session_id=session_id, tool=tool, arguments=arguments))

    async def check_permission(self, session_id: str, scope: str) -> Json:
        return plain(await self._client.check_permission(session_id, scope))

    async def spend(self, *, session_id: str | None = None) -> Json:
        return plain(await self._client.spend(session_id=session_id))

    async def list_entries(self, *, session_id: str | None = None, limit: int = 50) -> Json:
        return plain(await self._client.list_entries(session_id=session_id, limit=limit))

    async def get_approval(self, approval_id: str) -> Json:
        return plain(await self._client.get_approval(approval_id))
