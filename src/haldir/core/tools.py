"""Upstream tools: registered upstreams, pinned tool definitions and their hashes, the names the proxy
exposes, and `{{secret:NAME}}` templates (find, substitute, and scrub the injected values back out)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

from haldir.core.ledger import canonical_bytes

PROXY_TOOL = "proxy"  # the ledger's `tool` for governance actions on upstreams, tools and policies
MAX_EXPOSED_NAME = 64
HASHED_FIELDS = ("name", "description", "inputSchema", "annotations")
_SUFFIX_HEX = 10
# `{{secret:NAME}}`, NAME as `core.secrets.secret_name` allows.
SECRET_REF = re.compile(r"\{\{secret:([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\}\}")

Transport = Literal["http", "stdio"]
JsonT = TypeVar("JsonT")


@dataclass(frozen=True)
class Upstream:
    """A registered MCP server. Header and env values may hold `{{secret:NAME}}` references, resolved
    from the Vault only when connecting; nothing else is ever templated."""

    tenant_id: str
    name: str
    transport: Transport
    url: str | None
    headers: dict[str, str]
    command: str | None
    args: tuple[str, ...]
    env: dict[str, str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ToolPin:
    """A tool as stored: `definition` is the pinned (approved) one; when the upstream later serves a
    definition with another hash, it waits in `pending_definition` until an operator approves it."""

    tenant_id: str
    upstream: str
    name: str
    definition: dict[str, Any]
    pinned_hash: str
    current_hash: str
    pending_definition: dict[str, Any] | None
    first_seen_at: datetime
    updated_at: datetime
    removed_at: datetime | None = None

    @property
    def changed(self) -> bool:
        return self.pinned_hash != self.current_hash


@dataclass(frozen=True)
class SeenTool:
    """A tool as an upstream lists it now."""

    name: str
    definition: dict[str, Any]
    hash: str


@dataclass(frozen=True)
class ToolChange:
    name: str
    pinned_hash: str
    current_hash: str


@dataclass(frozen=True)
class ToolChanges:
    """What a tool sync changed: new (or returning) tools, tools whose definition now differs from the
    pin, tools back at their pinned definition, and tools the upstream no longer lists."""

    added: tuple[str, ...] = ()
    changed: tuple[ToolChange, ...] = ()
    reverted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.reverted or self.removed)


def diff_tools(known: list[ToolPin], seen: list[SeenTool]) -> ToolChanges:
    """Compare an upstream's stored tools with what it lists now. New tools are pinned as they are
    (trust on first use); a tool that comes back after removal is added again under its old pin."""
    stored = {pin.name: pin for pin in known}
    added, changed, reverted = [], [], []
    for tool in seen:
        pin = stored.get(tool.name)
        if pin is None or (pin.removed_at is not None and tool.hash == pin.current_hash):
            added.append(tool.name)
        elif tool.hash == pin.current_hash:
            continue
        elif tool.hash == pin.pinned_hash:
            reverted.append(tool.name)
        else:
            changed.append(ToolChange(tool.name, pin.pinned_hash, tool.hash))
    listed = {tool.name for tool in seen}
    removed = [pin.name for pin in known if pin.removed_at is None and pin.name not in listed]
    return ToolChanges(tuple(added), tuple(changed), tuple(reverted), tuple(sorted(removed)))


def definition_hash(tool: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the RFC 8785 JSON of the fields that say what a tool does: name, description,
    inputSchema and annotations. A change to any of them needs a new approval; a missing field hashes
    like null."""
    pinned = {field: tool.get(field) for field in HASHED_FIELDS}
    return hashlib.sha256(canonical_bytes(pinned)).hexdigest()


def exposed_names(tools_by_upstream: Mapping[str, list[str]]) -> dict[tuple[str, str], str]:
    """The name the proxy exposes for each (upstream, tool) of a tenant.

    A tool keeps its name when no other upstream has a tool of that name; otherwise it is
    `<upstream>__<tool>`. Names longer than 64 characters, and any names that would still collide, are
    cut and given a hash suffix of (upstream, tool): unique and stable while the set of tools is.
    """
    counts = Counter(tool for tools in tools_by_upstream.values() for tool in set(tools))
    names = {
        (upstream, tool): tool if counts[tool] == 1 else f"{upstream}__{tool}"
        for upstream, tools in tools_by_upstream.items()
        for tool in tools
    }
    taken = Counter(names.values())
    for key, name in names.items():
        if len(name) > MAX_EXPOSED_NAME or taken[name] > 1:
            names[key] = _hashed_name(name, *key)
    return names


def _hashed_name(name: str, upstream: str, tool: str) -> str:
    digest = hashlib.sha256(f"{upstream}\0{tool}".encode()).hexdigest()[:_SUFFIX_HEX]
    return f"{name[: MAX_EXPOSED_NAME - _SUFFIX_HEX - 1]}_{digest}"


def find_secret_refs(obj: Any) -> set[str]:
    """The names of every `{{secret:NAME}}` in the strings of a JSON structure (keys are not templates)."""
    found: set[str] = set()
    for text in _strings(obj):
        found.update(SECRET_REF.findall(text))
    return found


def substitute(obj: Any, values: Mapping[str, str]) -> Any:
    """A copy of a JSON structure with each `{{secret:NAME}}` in its strings replaced by `values[NAME]`.

    A reference to a name missing from `values` stays as written; callers resolve every name found by
    `find_secret_refs` first.
    """
    if isinstance(obj, str):
        return SECRET_REF.sub(lambda match: values.get(match.group(1), match.group(0)), obj)
    if isinstance(obj, dict):
        return {key: substitute(value, values) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [substitute(value, values) for value in obj]
    return obj


def injected_values(template: Any, substituted: Any) -> dict[str, str]:
    """The secret values `substitute` put into `template` to make `substituted`, by name: what a client
    that holds both (and never the values otherwise) must scrub from what its tool answers.

    Each string holding `{{secret:NAME}}` is matched against its substituted twin, literal text around
    the references as written; a string that does not match (an ambiguous pair of adjacent references,
    say) yields nothing rather than a wrong value.
    """
    found: dict[str, str] = {}
    for text, filled in _paired_strings(template, substituted):
        names = SECRET_REF.findall(text)
        if not names:
            continue
        pattern: list[str] = []
        groups: dict[str, str] = {}
        for index, part in enumerate(SECRET_REF.split(text)):
            if index % 2 == 0:
                pattern.append(re.escape(part))
            elif part in groups:
                pattern.append(f"(?P={groups[part]})")
            else:
                groups[part] = f"s{len(groups)}"
                pattern.append(f"(?P<{groups[part]}>.*?)")
        match = re.fullmatch("".join(pattern), filled, flags=re.DOTALL)
        if match is not None:
            for name, group in groups.items():
                if match.group(group):
                    found.setdefault(name, match.group(group))
    return found


def _paired_strings(template: Any, substituted: Any) -> list[tuple[str, str]]:
    if isinstance(template, str) and isinstance(substituted, str):
        return [(template, substituted)]
    if isinstance(template, dict) and isinstance(substituted, dict):
        return [
            pair
            for key, value in template.items()
            if key in substituted
            for pair in _paired_strings(value, substituted[key])
        ]
    if isinstance(template, list | tuple) and isinstance(substituted, list | tuple):
        return [pair for a, b in zip(template, substituted, strict=False) for pair in _paired_strings(a, b)]
    return []


def scrub(obj: JsonT, values: Mapping[str, str]) -> JsonT:
    """A copy of a JSON structure with every occurrence of an injected secret value, in any string (keys
        included), replaced by `[secret:NAME]`. One pass, longest value first: a value that contains another
        is replaced whole, and a placeholder is never scrubbed again. The result has the shape of `obj`
    (a string stays a string, an object an object)."""
    names = {value: name for name, value in values.items() if value}
    if not names:
        return obj
    pattern = re.compile("|".join(re.escape(value) for value in sorted(names, key=len, reverse=True)))
    clean = _scrub(obj, lambda text: pattern.sub(lambda match: f"[secret:{names[match.group(0)]}]", text))
    return cast(JsonT, clean)


def _scrub(obj: Any, clean: Callable[[str], str]) -> Any:
    if isinstance(obj, str):
        return clean(obj)
    if isinstance(obj, dict):
        return {_scrub(key, clean): _scrub(value, clean) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_scrub(value, clean) for value in obj]
    return obj


def _strings(obj: Any) -> list[str]:
    found: list[str] = []
    pending = [obj]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return found


@dataclass(frozen=True)
class OpenCall:
    """A governed call admitted (its record committed before it was forwarded) and, until `closed_at`,
    without a recorded outcome. A local tool's call carries in `details` what its finish needs."""

    tenant_id: str
    call_id: str
    session_id: str
    agent_id: str
    tool: str
    cost_micros: int
    admitted_at: datetime
    details: dict[str, Any] | None = None
    closed_at: datetime | None = None
    outcome: str | None = None  # ok, error, or unknown (closed by the stale-call sweep)
