"""An upstream's registration: what its configuration may hold, what the ledger records of it (names,
never values), and the fingerprint that tells a cached connection it is stale."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from haldir.core.ledger import canonical_bytes
from haldir.core.outbound import outbound_target
from haldir.core.tools import Upstream, find_secret_refs
from haldir.errors import InvalidRequest

UPSTREAM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # an RFC 9110 token
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True, repr=False)
class ResolvedUpstream:
    """An upstream ready to connect to: header and env values with their secrets substituted, the values
    injected (by secret name, to scrub them from anything the upstream returns) and a fingerprint that
    changes whenever the configuration or a referenced secret does."""

    upstream: Upstream
    headers: dict[str, str]
    env: dict[str, str]
    injected: dict[str, str]
    fingerprint: str

    def __repr__(self) -> str:  # header and env values may hold secrets
        return f"ResolvedUpstream({self.upstream.name!r}, secrets={sorted(self.injected)})"


def upstream_name(name: Any) -> str:
    """`name` if it can name an upstream: it prefixes tool names as `<upstream>__<tool>`."""
    if not isinstance(name, str) or not UPSTREAM_NAME.fullmatch(name) or "__" in name:
        raise InvalidRequest(
            "an upstream name is 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter or "
            f"digit, without '__'; got {name!r}",
            field="name",
        )
    return name


def no_refs(text: str, *, field: str) -> str:
    if "{{secret:" in text:
        raise InvalidRequest(
            f"{field} cannot hold secret references; only header and env values can", field=field
        )
    return text


def string_map(value: Any, *, field: str, key: re.Pattern[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 100:
        raise InvalidRequest(f"{field} must be an object of at most 100 names to strings", field=field)
    for name, text in value.items():
        if not isinstance(name, str) or not key.fullmatch(name):
            raise InvalidRequest(f"{field} has an invalid name {name!r}", field=field)
        if not isinstance(text, str) or len(text) > 8192 or not text.isprintable():
            raise InvalidRequest(
                f"{field}.{name} must be printable text of at most 8192 characters", field=field
            )
    return dict(value)


def string_list(value: Any, *, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 100:
        raise InvalidRequest(f"{field} must be a list of at most 100 strings", field=field)
    for text in value:
        if not isinstance(text, str) or len(text) > 4096 or "\0" in text:
            raise InvalidRequest(f"{field} must hold strings of at most 4096 characters", field=field)
        no_refs(text, field=field)
    return tuple(value)


def secret_refs(upstream: Upstream) -> list[str]:
    return sorted(find_secret_refs([upstream.headers, upstream.env]))


def upstream_details(upstream: Upstream) -> dict[str, Any]:
    """What the ledger records of an upstream: names of headers and env variables, never values."""
    return {
        "name": upstream.name,
        "transport": upstream.transport,
        "url": None if upstream.url is None else outbound_target(upstream.url).display,
        "command": upstream.command,
        "args_count": len(upstream.args),
        "header_names": sorted(upstream.headers),
        "env_names": sorted(upstream.env),
        "secrets": secret_refs(upstream),
    }


def fingerprint(upstream: Upstream, versions: dict[str, int]) -> str:
    record = {
        "name": upstream.name,
        "transport": upstream.transport,
        "url": upstream.url,
        "headers": upstream.headers,
        "command": upstream.command,
        "args": list(upstream.args),
        "env": upstream.env,
        "created_at": upstream.created_at.isoformat(),
        "secret_versions": versions,
    }
    return hashlib.sha256(canonical_bytes(record)).hexdigest()
