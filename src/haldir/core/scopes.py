"""Session scopes: what an agent session may do.

Grammar: a scope is `name` or `name:qualifier`. `name` grants itself and every `name:<anything>`;
`name:qualifier` grants only itself. `spend:<amount>` is the one typed qualifier: it grants `spend`
and sets the session's spend limit when none is given explicitly. Any well-formed name is accepted unless
the caller passes the set of `known` names (strict mode, the typo guard).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from haldir.core.money import to_micros
from haldir.errors import InvalidAmount, InvalidScope

BUILTIN_SCOPES = frozenset({"read", "write", "execute", "delete", "spend", "admin"})
SPEND = "spend"

SCOPE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
SCOPE_QUALIFIER = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_SPEND_AMOUNT = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")


@dataclass(frozen=True)
class Scope:
    name: str
    qualifier: str | None = None

    def grants(self, wanted: Scope) -> bool:
        """Whether holding this scope allows `wanted`."""
        if self.name != wanted.name:
            return False
        return self.qualifier is None or self.qualifier == wanted.qualifier

    @classmethod
    def from_text(cls, text: str) -> Scope:
        """A scope from trusted storage, already validated when it was created."""
        name, sep, qualifier = text.partition(":")
        return cls(name, qualifier if sep else None)

    def __str__(self) -> str:
        return self.name if self.qualifier is None else f"{self.name}:{self.qualifier}"


def parse_scope(text: str, *, known: frozenset[str] | None = None) -> Scope:
    """Parse one scope; malformed text, or a name outside `known` when it is given, raises `InvalidScope`."""
    if not isinstance(text, str):
        raise InvalidScope(f"a scope must be a string, got {type(text).__name__}")
    name, sep, qualifier = text.partition(":")
    if not SCOPE_NAME.fullmatch(name) or (sep and not qualifier):
        raise InvalidScope(
            f"malformed scope {text!r}: expected 'name' or 'name:qualifier', each at most 64 lowercase "
            "letters, digits, '_', '-' or '.', the name starting with a letter"
        )
    if known is not None and name not in known:
        raise InvalidScope(
            f"unknown scope {name!r}; known scopes are {sorted(known)} (HALDIR_STRICT_SCOPES is on: "
            "declare your own names with HALDIR_CUSTOM_SCOPES)"
        )
    if not sep:
        return Scope(name)
    if name == SPEND:
        if not _SPEND_AMOUNT.fullmatch(qualifier):
            raise InvalidScope(
                f"malformed scope {text!r}: expected 'spend:<amount>' such as 'spend:50' or 'spend:2.50'"
            )
        try:
            to_micros(qualifier, field="spend scope")
        except InvalidAmount as exc:
            raise InvalidScope(f"malformed scope {text!r}: {exc.message}") from None
        return Scope(name, qualifier)
    if not SCOPE_QUALIFIER.fullmatch(qualifier):
        raise InvalidScope(f"malformed scope {text!r}: bad qualifier {qualifier!r}")
    return Scope(name, qualifier)


@dataclass(frozen=True)
class SessionScopes:
    """The scopes a session is created with, and the spend limit a `spend:<amount>` scope implied."""

    scopes: tuple[Scope, ...]
    implied_spend_limit_micros: int | None


def parse_session_scopes(texts: Iterable[str], *, known: frozenset[str] | None = None) -> SessionScopes:
    """Parse, de-duplicate and normalise a session's scopes (`spend:50` becomes `spend` plus a limit)."""
    parsed: set[Scope] = set()
    limits: set[int] = set()
    for text in texts:
        scope = parse_scope(text, known=known)
        if scope.name == SPEND and scope.qualifier is not None:
            limits.add(to_micros(scope.qualifier))
            scope = Scope(SPEND)
        parsed.add(scope)
    if len(limits) > 1:
        raise InvalidScope("conflicting spend scopes: give one 'spend:<amount>' or an explicit spend_limit")
    ordered = sorted(parsed, key=lambda scope: (scope.name, scope.qualifier or ""))
    return SessionScopes(tuple(ordered), limits.pop() if limits else None)


def grants(held: Iterable[Scope], wanted: Scope) -> bool:
    """Whether any held scope grants `wanted`."""
    return any(scope.grants(wanted) for scope in held)
