"""Pages: Jinja2 templates shipped in the package, autoescaped, rendered into HTML responses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from haldir.core.money import format_micros
from haldir.core.pagination import Position, encode_cursor
from haldir.web.guard import CSRF_FIELD, Operator

# Every value a template prints is escaped (agent ids, tool names, reasons: anything an agent supplied);
# nothing is marked safe except the few template fragments that build markup from escaped values.
_ENV = Environment(
    loader=PackageLoader("haldir.web", "templates"),
    autoescape=select_autoescape(["html", "svg"], default_for_string=True, default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(moment: datetime | str | None) -> str:
    """A time as `2026-12-06 16:46:02 UTC`; a record's ISO text is parsed first."""
    if moment is None:
        return "—"
    if isinstance(moment, str):
        try:
            parsed = datetime.fromisoformat(moment)
        except ValueError:
            return moment
        return when(parsed)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def money(amount: Decimal | str | None) -> str:
    """`$ 1,234.50`."""
    if amount is None:
        return "—"
    return f"$ {Decimal(amount):,.2f}"


def micros(amount: int) -> str:
    return money(format_micros(amount))


def cursor(position: Position | None) -> str:
    return encode_cursor(position) or ""


def pretty(value: Any) -> str:
    """JSON for reading, escaped like any other text when printed."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


_ENV.filters.update(when=when, money=money, micros=micros, cursor=cursor, pretty=pretty)


def page(
    request: Request, template: str, *, who: Operator | None, http_status: int = 200, **context: Any
) -> HTMLResponse:
    """`template` rendered for `who` (None: signed out), with the dashboard's base path and CSRF field."""
    html = _ENV.get_template(template).render(
        base=request.scope.get("root_path", ""),
        who=who,
        csrf_field=CSRF_FIELD,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=http_status)
