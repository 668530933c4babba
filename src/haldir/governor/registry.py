"""The proxy's registry: upstreams (and the secrets their connections use), tool pins and their
approval, and policies. Reading needs the key scope `proxy:read`, changing `proxy:write`; registering a
stdio upstream also needs `admin:write`, because it runs a command on this server, and only the tenants
and programs the operator allows (`core.commands`) may register or start one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Literal

from haldir.cache import Cache
from haldir.core import ids
from haldir.core.clock import Clock
from haldir.core.commands import CommandRule
from haldir.core.keys import Principal
from haldir.core.ledger import EntryDraft, canonical_bytes
from haldir.core.policies import Policy, parse_policy
from haldir.core.scopes import SCOPE_QUALIFIER, Scope
from haldir.core.secrets import VAULT_TOOL, SecretVersion
from haldir.core.tools import (
    PROXY_TOOL,
    SeenTool,
    ToolChanges,
    ToolPin,
    Upstream,
    definition_hash,
    exposed_names,
    substitute,
)
from haldir.errors import Conflict, InvalidRequest, NotFound, StdioNotAllowed
from haldir.governor.fields import text_field
from haldir.governor.ledger import Ledger
from haldir.governor.upstreams import (
    ENV_NAME,
    HEADER_NAME,
    UPSTREAM_NAME,
    ResolvedUpstream,
    fingerprint,
    no_refs,
    secret_refs,
    string_list,
    string_map,
    upstream_details,
    upstream_name,
)
from haldir.governor.vault import Vault
from haldir.proxy.outbound import check_outbound_url
from haldir.store.ports import ChangeFeed, ProxyStore

MAX_POLICIES = 1000
CACHED_TENANTS = 10_000
MAX_DEFINITION_BYTES = 64 * 1024
MAX_TOOL_NAME = 128


@dataclass(frozen=True)
class ProxyTool:
    """A tool as the proxy exposes it: `definition` is the pinned one; a `changed` tool also carries
    the definition its upstream serves now, which calls wait on until an operator approves it."""

    name: str
    upstream: str
    tool_name: str
    definition: dict[str, Any]
    pending_definition: dict[str, Any] | None
    status: Literal["pinned", "changed"]
    pinned_hash: str
    current_hash: str
    first_seen_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ToolSync:
    """What one sync of an upstream's tools changed, by the upstream's tool names."""

    upstream: str
    added: tuple[str, ...]
    changed: tuple[str, ...]
    reverted: tuple[str, ...]
    removed: tuple[str, ...]
    skipped: tuple[str, ...]  # listed by the upstream but not usable (bad name or definition)


class Registry:
    """The tenant's upstreams, their tools' pins and the policies; and, for the proxy, the lookups that
    admitting a call needs."""

    def __init__(
        self,
        *,
        proxy_store: ProxyStore,
        changes: ChangeFeed,
        vault: Vault,
        ledger: Ledger,
        clock: Clock,
        outbound_allow: Sequence[IPv4Network | IPv6Network],
        commands: CommandRule,
    ) -> None:
        self._proxy_store = proxy_store
        self._changes = changes
        # What admitting a call reads, per tenant, until anything of a registry changes anywhere.
        self._tools: Cache[str, dict[str, ProxyTool]] = Cache(changes.epoch, maxsize=CACHED_TENANTS)
        self._policies: Cache[str, list[Policy]] = Cache(changes.epoch, maxsize=CACHED_TENANTS)
        self._upstreams: Cache[tuple[str, str], Upstream] = Cache(changes.epoch, maxsize=CACHED_TENANTS)
        self._vault = vault
        self._ledger = ledger
        self._clock = clock
        self._outbound_allow = tuple(outbound_allow)  # private networks upstream URLs may reach
        self._commands = commands  # who may register and start stdio upstreams

    # upstreams

    async def register_upstream(
        self,
        principal: Principal,
        *,
        name: str,
        url: str | None = None,
        headers: dict[str, str] | None = None,
        command: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Upstream:
        """Register an MCP server by URL (http) or command (stdio). A name in use is a 409: delete the
        upstream first to register it again, so a configuration never changes under its pins unseen.
        The ledger records header and env names and the secrets referenced, never their values."""
        principal.require("proxy:write")
        name = upstream_name(name)
        if (url is None) == (command is None):
            raise InvalidRequest("give exactly one of url (an HTTP upstream) or command (a stdio upstream)")
        if url is not None:
            if args or env:
                raise InvalidRequest("args and env belong to a stdio upstream (command), not to a url")
            url = no_refs(text_field(url, field="url", max_length=2048), field="url")
            await check_outbound_url(url, self._outbound_allow)
        else:
            principal.require("admin:write")  # a stdio upstream runs a command on this server
            if headers:
                raise InvalidRequest("headers belong to an HTTP upstream (url), not to a command")
            command = no_refs(text_field(command or "", field="command", max_length=1024), field="command")
        now = self._clock.now()
        upstream = Upstream(
            tenant_id=principal.tenant_id,
            name=name,
            transport="http" if url is not None else "stdio",
            url=url,
            headers=string_map(headers, field="headers", key=HEADER_NAME),
            command=command,
            args=string_list(args, field="args"),
            env=string_map(env, field="env", key=ENV_NAME),
            created_at=now,
            updated_at=now,
        )
        self._require_runnable(upstream, doing="registered")  # before anything is stored or started
        entry = await self._governance_entry(principal, "proxy.upstream.register", upstream_details(upstream))
        if not await self._proxy_store.insert_upstream(upstream, entry=entry):
            raise Conflict(f"upstream {name!r} already exists; delete it first to register it again")
        await self._changes.announce()
        return upstream

    async def list_upstreams(self, principal: Principal) -> list[Upstream]:
        principal.require("proxy:read")
        return await self._proxy_store.list_upstreams(principal.tenant_id)

    async def get_upstream(self, principal: Principal, name: str) -> Upstream:
        principal.require("proxy:read")
        return await self._upstream(principal.tenant_id, name)

    async def delete_upstream(self, principal: Principal, name: str) -> Upstream:
        """Delete an upstream and its tool pins (a later registration pins its tools afresh); the
        upstream as it was."""
        principal.require("proxy:write")
        upstream = await self._upstream(principal.tenant_id, name)
        entry = await self._governance_entry(principal, "proxy.upstream.delete", upstream_details(upstream))
        if not await self._proxy_store.delete_upstream(principal.tenant_id, upstream.name, entry=entry):
            raise NotFound(f"no upstream {name!r} in this tenant")
        await self._changes.announce()
        return upstream

    async def upstream_to_refresh(self, principal: Principal, name: str) -> Upstream:
        """An upstream whose tools the caller may rediscover (which can change what agents see)."""
        principal.require("proxy:write")
        return await self._upstream(principal.tenant_id, name)

    async def upstream_for_connect(self, tenant_id: str, name: str) -> ResolvedUpstream:
        """The upstream with `{{secret:NAME}}` in its header and env values replaced by the tenant's
        secrets. Upstream configuration is the operator's, so no session scope applies; each release is
        recorded in the ledger (actor "proxy") before the value is returned."""
        upstream = self._require_runnable(await self._upstream(tenant_id, name), doing="started")
        secrets = [await self._upstream_secret(upstream, ref) for ref in secret_refs(upstream)]
        values = {secret.name: await self._vault.open_unchecked(secret) for secret in secrets}
        for secret in secrets:
            details = {**secret_details(secret), "actor": "proxy", "upstream": upstream.name}
            fields = governance_fields("secret.release", details) | {"tool": VAULT_TOOL}
            entry = self._ledger.entry(tenant_id, session_id=None, agent_id=None, **fields)
            await self._vault.record_release(tenant_id, secret.name, entry=entry)
        return ResolvedUpstream(
            upstream=upstream,
            headers=substitute(upstream.headers, values),
            env=substitute(upstream.env, values),
            injected=values,
            fingerprint=fingerprint(upstream, {secret.name: secret.version for secret in secrets}),
        )

    async def upstream_fingerprint(self, tenant_id: str, name: str) -> str:
        """The fingerprint `upstream_for_connect` would give now, without opening any secret: a cached
        connection whose fingerprint differs is stale. Refuses, as `upstream_for_connect` does, a stdio
        upstream the operator no longer allows, so a cached connection is not used either."""
        upstream = self._require_runnable(await self._upstream(tenant_id, name), doing="started")
        versions = {ref: await self._vault.latest_version(tenant_id, ref) for ref in secret_refs(upstream)}
        return fingerprint(upstream, versions)

    def _require_runnable(self, upstream: Upstream, *, doing: str) -> Upstream:
        """`upstream`, unless it is a stdio upstream that the operator's rule (HALDIR_STDIO_TENANTS,
        HALDIR_STDIO_COMMANDS, read at start) does not allow: checked on registering and again before
        every start, since a stored upstream may outlive the rule it was registered under."""
        if upstream.transport != "stdio":
            return upstream
        refusal = self._commands.tenant_refusal(upstream.tenant_id) or self._commands.program_refusal(
            upstream.command or "", upstream.env
        )
        if refusal:
            raise StdioNotAllowed(f"upstream {upstream.name!r} is not {doing}: {refusal}")
        return upstream

    async def _upstream(self, tenant_id: str, name: str) -> Upstream:
        found = None
        if isinstance(name, str) and UPSTREAM_NAME.fullmatch(name):
            found = await self._upstreams.read_through(
                (tenant_id, name), lambda: self._proxy_store.get_upstream(tenant_id, name)
            )
        if found is None:
            raise NotFound(f"no upstream {name!r} in this tenant")
        return found

    async def _upstream_secret(self, upstream: Upstream, ref: str) -> SecretVersion:
        secret = await self._vault.latest_secret(upstream.tenant_id, ref)
        if secret is None:
            raise NotFound(
                f"upstream {upstream.name!r} refers to secret {ref!r}, which this tenant does not have: "
                "store the secret, or register the upstream again without it"
            )
        return secret

    # tools

    async def record_tools(self, tenant_id: str, upstream: str, tools: list[dict[str, Any]]) -> ToolSync:
        """Record what an upstream lists now (MCP Tool objects as JSON). New tools are pinned as they
        are; a tool whose definition changed keeps its pin, its new definition waits for approval, and a
        flagged `proxy.tool.changed` entry records it; tools no longer listed are marked removed."""
        found = await self._upstream(tenant_id, upstream)
        seen, skipped = _seen_tools(tools)

        def entries(changes: ToolChanges) -> list[EntryDraft]:
            made = [
                self._ledger.entry(
                    tenant_id,
                    session_id=None,
                    agent_id=None,
                    flag_reason=(
                        f"Tool '{change.name}' of upstream '{found.name}' changed its definition since it "
                        "was pinned; calls are refused until an operator approves it"
                    ),
                    **governance_fields(
                        "proxy.tool.changed",
                        {
                            "upstream": found.name,
                            "tool": change.name,
                            "pinned_hash": change.pinned_hash,
                            "current_hash": change.current_hash,
                        },
                    ),
                )
                for change in changes.changed
            ]
            if changes.added or changes.reverted or changes.removed:
                details = {
                    "upstream": found.name,
                    "added": list(changes.added),
                    "reverted": list(changes.reverted),
                    "removed": list(changes.removed),
                }
                fields = governance_fields("proxy.tools.sync", details)
                made.append(self._ledger.entry(tenant_id, session_id=None, agent_id=None, **fields))
            return made

        changes = await self._proxy_store.sync_tools(
            tenant_id, found.name, seen, at=self._clock.now(), entries=entries
        )
        if changes is None:
            raise NotFound(f"no upstream {upstream!r} in this tenant")
        if changes.added or changes.changed or changes.reverted or changes.removed:
            await self._changes.announce()
        return ToolSync(
            upstream=found.name,
            added=changes.added,
            changed=tuple(change.name for change in changes.changed),
            reverted=changes.reverted,
            removed=changes.removed,
            skipped=skipped,
        )

    async def list_proxy_tools(self, principal: Principal) -> list[ProxyTool]:
        """Every tool the tenant's upstreams list, by exposed name."""
        principal.require("proxy:read")
        return sorted(await self.proxy_tools(principal.tenant_id), key=lambda tool: tool.name)

    async def approve_tool(self, principal: Principal, exposed_name: str) -> ProxyTool:
        """Pin a changed tool's new definition, so calls to it are admitted again. Approving a tool that
        is already pinned changes nothing and answers it as it is, so a repeated approval is harmless."""
        principal.require("proxy:write")
        tool = await self.proxy_tool(principal.tenant_id, exposed_name)
        if tool.status != "changed":
            return tool
        details = {
            "upstream": tool.upstream,
            "tool": tool.name,
            "tool_name": tool.tool_name,
            "previous_hash": tool.pinned_hash,
            "approved_hash": tool.current_hash,
        }
        entry = await self._governance_entry(principal, "proxy.tool.approve", details)
        pinned = await self._proxy_store.approve_tool(
            principal.tenant_id,
            tool.upstream,
            tool.tool_name,
            current_hash=tool.current_hash,
            at=self._clock.now(),
            entry=entry,
        )
        if pinned is None:
            raise Conflict(f"tool {tool.name!r} changed again meanwhile; list the tools and approve again")
        await self._changes.announce()
        return _proxy_tool(pinned, tool.name)

    async def proxy_tools(self, tenant_id: str) -> list[ProxyTool]:
        """The tenant's tools by exposed name, for the proxy (no key scope: the caller checks its own)."""
        return list((await self._tools_by_name(tenant_id)).values())

    async def proxy_tool(self, tenant_id: str, exposed_name: str) -> ProxyTool:
        """The tenant's tool `exposed_name`; `NotFound` when it has none (no key scope, as `proxy_tools`)."""
        found = (await self._tools_by_name(tenant_id)).get(exposed_name)
        if found is None:
            raise NotFound(
                f"no tool {exposed_name!r} in this tenant's proxy; list the tools to see their names"
            )
        return found

    async def _tools_by_name(self, tenant_id: str) -> dict[str, ProxyTool]:
        found = await self._tools.read_through(tenant_id, lambda: self._load_tools(tenant_id))
        assert found is not None  # a tenant without tools has an empty dict
        return found

    async def _load_tools(self, tenant_id: str) -> dict[str, ProxyTool]:
        pins = await self._proxy_store.list_tools(tenant_id)
        by_upstream: dict[str, list[str]] = {}
        for pin in pins:
            by_upstream.setdefault(pin.upstream, []).append(pin.name)
        names = exposed_names(by_upstream)
        tools = {}
        for pin in pins:
            exposed = names[(pin.upstream, pin.name)]
            tools[exposed] = _proxy_tool(pin, exposed)
        return tools

    # policies

    async def create_policy(self, principal: Principal, spec: dict[str, Any]) -> Policy:
        principal.require("proxy:write")
        policy = Policy(ids.new_id(ids.POLICY), parse_policy(spec), self._clock.now())
        if len(await self._proxy_store.list_policies(principal.tenant_id)) >= MAX_POLICIES:
            raise Conflict(
                f"this tenant has {MAX_POLICIES} policies, the most it may have; delete some first"
            )
        entry = await self._governance_entry(principal, "proxy.policy.create", _policy_details(policy))
        await self._proxy_store.insert_policy(principal.tenant_id, policy, entry=entry)
        await self._changes.announce()
        return policy

    async def list_policies(self, principal: Principal) -> list[Policy]:
        """The tenant's policies, oldest first."""
        principal.require("proxy:read")
        return await self._proxy_store.list_policies(principal.tenant_id)

    async def policies(self, tenant_id: str) -> list[Policy]:
        """The tenant's policies, oldest first, for the proxy's admission (no key scope)."""
        found = await self._policies.read_through(
            tenant_id, lambda: self._proxy_store.list_policies(tenant_id)
        )
        assert found is not None  # a tenant without policies has an empty list
        return found

    async def delete_policy(self, principal: Principal, policy_id: str) -> Policy:
        """Delete a policy; its rate-limit and spend-limit counters go with it."""
        principal.require("proxy:write")

        def entry(policy: Policy) -> EntryDraft:
            fields = governance_fields("proxy.policy.delete", _policy_details(policy), principal)
            return self._ledger.entry(principal.tenant_id, session_id=None, agent_id=None, **fields)

        deleted = None
        if ids.is_id(ids.POLICY, policy_id):
            deleted = await self._proxy_store.delete_policy(principal.tenant_id, policy_id, entry=entry)
        if deleted is None:
            raise NotFound(f"no policy {policy_id!r} in this tenant")
        await self._changes.announce()
        return deleted

    async def _governance_entry(
        self, principal: Principal, action: str, details: dict[str, Any]
    ) -> EntryDraft:
        """The entry of a change an API key made to the proxy's configuration (no session)."""
        fields = governance_fields(action, details, principal)
        return self._ledger.entry(principal.tenant_id, session_id=None, agent_id=None, **fields)


def tool_scope(exposed_name: str) -> Scope:
    """The session scope a tool call needs: `execute:<tool>` (which `execute` grants), or `execute` when
    the tool's name cannot be a scope qualifier (uppercase letters, say)."""
    return Scope("execute", exposed_name if SCOPE_QUALIFIER.fullmatch(exposed_name) else None)


def _seen_tools(tools: Any) -> tuple[list[SeenTool], tuple[str, ...]]:
    """The usable tools of an upstream's listing, and the names (or positions) of the others."""
    seen: dict[str, SeenTool] = {}
    skipped: list[str] = []
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_TOOL_NAME or not name.isprintable():
            skipped.append(f"#{index}")
            continue
        try:
            if name in seen or len(canonical_bytes(tool)) > MAX_DEFINITION_BYTES:
                raise InvalidRequest("duplicate or oversized")
            seen[name] = SeenTool(name, tool, definition_hash(tool))
        except InvalidRequest:
            skipped.append(name)
    return list(seen.values()), tuple(skipped)


def _proxy_tool(pin: ToolPin, exposed: str) -> ProxyTool:
    return ProxyTool(
        name=exposed,
        upstream=pin.upstream,
        tool_name=pin.name,
        definition=pin.definition,
        pending_definition=pin.pending_definition if pin.changed else None,
        status="changed" if pin.changed else "pinned",
        pinned_hash=pin.pinned_hash,
        current_hash=pin.current_hash,
        first_seen_at=pin.first_seen_at,
        updated_at=pin.updated_at,
    )


def _policy_details(policy: Policy) -> dict[str, Any]:
    return {"policy_id": policy.policy_id, "type": policy.type, "spec": policy.spec}


def secret_details(secret: SecretVersion) -> dict[str, Any]:
    return {
        "name": secret.name,
        "version": secret.version,
        "value_hmac": secret.value_digest,
        "scope_required": secret.scope_required,
    }


def governance_fields(
    action: str, details: dict[str, Any], principal: Principal | None = None
) -> dict[str, Any]:
    if principal is not None:
        details = {**details, "key_prefix": principal.key_prefix}
    return {"tool": PROXY_TOOL, "action": action, "status": "ok", "cost_usd": 0, "details": details}
