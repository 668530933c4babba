"""The discovery documents: `/llms.txt`, `/.well-known/ai-plugin.json`, `/.well-known/mcp/server-card.json`.

Public (no key) and cheap: each is built once per process, on its first request, from the app's OpenAPI
document and the MCP servers' own listings; a request only fills in the base URL. They say what this server
is and how to use it, and nothing about any tenant.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from mcp.server.lowlevel import Server
from pydantic import BaseModel, ConfigDict, Field

from haldir.http.llms import render_llms
from haldir.mcp.card import REPOSITORY, gateway_for_card, server_card

LLMS_PATH = "/llms.txt"
PLUGIN_PATH = "/.well-known/ai-plugin.json"
CARD_PATH = "/.well-known/mcp/server-card.json"
CACHE_CONTROL = "public, max-age=300"
MAX_RENDERED = 64  # bases (hosts) whose documents are kept rendered; Host is the client's to choose

_BASE = "@@haldir-base-url@@"  # stands for the base URL in the built documents
_SAFE_BASE = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
_MEDIA = {
    LLMS_PATH: "text/plain; charset=utf-8",
    PLUGIN_PATH: "application/json",
    CARD_PATH: "application/json",
}


class PluginAuth(BaseModel):
    type: Literal["user_http"] = "user_http"
    authorization_type: Literal["bearer"] = "bearer"


class PluginApi(BaseModel):
    type: Literal["openapi"] = "openapi"
    url: str = Field(description="The OpenAPI document.")


class PluginManifest(BaseModel):
    """The classic AI plugin manifest."""

    schema_version: Literal["v1"] = "v1"
    name_for_human: str
    name_for_model: str
    description_for_human: str
    description_for_model: str
    auth: PluginAuth
    api: PluginApi
    legal_info_url: str


class ServerCard(BaseModel):
    """An MCP server card (SEP-2127): the governance server; the gateway and stdio commands in `_meta`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    schema_: str = Field(alias="$schema")
    name: str
    version: str
    title: str | None = None
    description: str | None = None
    remotes: list[dict[str, Any]]
    capabilities: dict[str, Any]
    tools: list[dict[str, Any]]
    prompts: list[dict[str, Any]]
    meta: dict[str, Any] = Field(alias="_meta")


class Discovery:
    """The documents of one app: built once (`built`), rendered once per base URL, answered with an ETag."""

    def __init__(self, app: FastAPI, *, public_url: str | None, governance: Server[Any]) -> None:
        self.app = app
        self.public_url = public_url
        self.governance = governance
        self._lock = asyncio.Lock()
        self._templates: dict[str, bytes] | None = None
        self._rendered: dict[tuple[str, str], tuple[bytes, str]] = {}

    async def built(self) -> dict[str, bytes]:
        """Each document with a placeholder for the base URL."""
        async with self._lock:
            if self._templates is None:
                openapi = self.app.openapi()
                card = await server_card(self.governance, gateway_for_card(), base_url=_BASE)
                paths = {"card": CARD_PATH, "plugin": PLUGIN_PATH}
                self._templates = {
                    LLMS_PATH: render_llms(openapi, card, base=_BASE, paths=paths).encode(),
                    PLUGIN_PATH: _json(plugin_manifest(openapi, card["description"], base=_BASE)),
                    CARD_PATH: _json(card),
                }
            return self._templates

    async def respond(self, request: Request, path: str) -> Response:
        base = self.base_url(request)
        rendered = self._rendered.get((path, base))
        if rendered is None:
            body = (await self.built())[path].replace(_BASE.encode(), base.encode())
            rendered = (body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
            if len(self._rendered) >= MAX_RENDERED:
                self._rendered.clear()
            self._rendered[(path, base)] = rendered
        body, etag = rendered
        headers = {
            "Cache-Control": CACHE_CONTROL,
            "ETag": etag,
            "Access-Control-Allow-Origin": "*",
            "Cross-Origin-Resource-Policy": "cross-origin",
        }
        if self.public_url is None:
            headers["Vary"] = "Host, X-Forwarded-Proto"
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=_MEDIA[path], headers=headers)

    def base_url(self, request: Request) -> str:
        """`HALDIR_PUBLIC_URL`, else the request's own scheme, Host and root path. A Host that is not a
        plain name or address gives relative links rather than being written into a document."""
        if self.public_url is not None:
            return self.public_url
        found = str(request.base_url).rstrip("/")
        return found if _SAFE_BASE.fullmatch(found) else ""


def plugin_manifest(openapi: dict[str, Any], description: str, *, base: str) -> dict[str, Any]:
    info = openapi["info"]
    manifest = PluginManifest(
        name_for_human=info["title"],
        name_for_model=info["title"].lower(),
        description_for_human=info.get("summary", "")[:100],
        description_for_model=(
            f"{description} Authenticate with an API key as a bearer token. Refusals are errors with a "
            "`code`; a 202 `approval_required` means a person must approve the request first."
        ),
        auth=PluginAuth(),
        api=PluginApi(url=f"{base}/openapi.json"),
        legal_info_url=f"{REPOSITORY}/blob/main/LICENSE",
    )
    return manifest.model_dump(mode="json")


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


router = APIRouter(tags=["discovery"])


def _discovery(request: Request) -> Discovery:
    found: Discovery = request.app.state.discovery
    return found


@router.get(
    LLMS_PATH,
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        304: {"description": "Not modified since the `ETag` in `If-None-Match`."},
    },
)
async def llms_txt(request: Request) -> Response:
    """What Haldir is and how an agent uses it, in the llms.txt convention: routes by capability, the
    MCP endpoints, links to the OpenAPI document and the docs."""
    return await _discovery(request).respond(request, LLMS_PATH)


@router.get(
    PLUGIN_PATH,
    response_class=Response,
    responses={200: {"model": PluginManifest}, 304: {"description": "Not modified."}},
)
async def ai_plugin(request: Request) -> Response:
    """The AI plugin manifest: bearer API key auth and the OpenAPI document's URL."""
    return await _discovery(request).respond(request, PLUGIN_PATH)


@router.get(
    CARD_PATH,
    response_class=Response,
    responses={200: {"model": ServerCard}, 304: {"description": "Not modified."}},
)
async def mcp_server_card(request: Request) -> Response:
    """The MCP server card: the servers' names, transports, tools and prompts, as they list them."""
    return await _discovery(request).respond(request, CARD_PATH)


def install_discovery(app: FastAPI, *, public_url: str | None, governance: Server[Any]) -> None:
    """Serve the documents; `governance` is the server at `/mcp` (the gateway is built as `/mcp/gateway`
    builds it, for a tenant without upstreams)."""
    app.state.discovery = Discovery(app, public_url=public_url, governance=governance)
    app.router.routes.extend(router.routes)
