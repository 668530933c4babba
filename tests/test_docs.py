"""The docs describe what exists: every setting, every route, and the two quick-start commands."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from pydantic_settings import BaseSettings

from haldir.http.app import create_app
from haldir.settings import ClientSettings, GatewaySettings, Settings
from tests.http.routes import SAMPLES

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MODELS: tuple[type[BaseSettings], ...] = (Settings, ClientSettings, GatewaySettings)
NOT_SETTINGS = {"HALDIR_TEST_POSTGRES_URL"}  # read by the test suite, not by Haldir
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The body of the `## heading` section, up to the next heading of the same level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def _env_names() -> set[str]:
    return {
        f"{model.model_config.get('env_prefix', '')}{field}".upper()
        for model in SETTINGS_MODELS
        for field in model.model_fields
    }


def _walk(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every route with its full path, looking inside included routers.

    Older FastAPI versions flatten included routers into `app.routes`; newer ones keep each as a
    wrapper that holds the `original_router` and its include prefix.
    """
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            context = getattr(route, "include_context", None)
            yield from _walk(nested.routes, prefix + getattr(context, "prefix", ""))
        elif hasattr(route, "path"):
            yield prefix + route.path, route


def _served(*, api_only: bool) -> set[str]:
    """`METHOD /path` of every route of the app: its APIRoutes, or every route with methods."""
    app = create_app(Settings())  # the store opens only in the lifespan, so this touches no database
    found = {
        f"{method} {path}"
        for path, route in _walk(app.routes)
        if isinstance(route, APIRoute) or not api_only
        for method in getattr(route, "methods", None) or ()
    }
    # The schema lists every APIRoute too: a route the walk missed is still checked.
    for path, operations in app.openapi()["paths"].items():
        found |= {f"{method.upper()} {path}" for method in operations if method.upper() in HTTP_METHODS}
    assert "POST /v1/sessions" in found, f"route discovery is broken: found only {sorted(found)}"
    return found


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = _read("README.md")
    missing = sorted(name for name in _env_names() if f"`{name}`" not in readme)
    assert not missing, f"settings missing from README.md: {missing}"


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    named = set(re.findall(r"\bHALDIR_[A-Z0-9_]+\b", _read("README.md")))
    unknown = sorted(named - _env_names() - NOT_SETTINGS)
    assert not unknown, f"README.md names variables that are not settings: {unknown}"


def test_every_route_is_documented_in_the_api_reference() -> None:
    reference = _read("docs/api.md")
    missing = sorted(route for route in _served(api_only=True) if f"`{route}`" not in reference)
    assert not missing, f"routes missing from docs/api.md: {missing}"


def test_the_api_reference_documents_no_route_that_does_not_exist() -> None:
    headings = re.findall(r"^#+ `?([A-Z]+ /\S*?)`?$", _read("docs/api.md"), flags=re.MULTILINE)
    assert headings, "docs/api.md has no route headings such as '### `POST /v1/sessions`'"
    unknown = sorted(set(headings) - _served(api_only=False))
    assert not unknown, f"docs/api.md documents routes the app does not have: {unknown}"


def test_the_quick_start_is_make_run_and_make_test() -> None:
    quick_start = _section(_read("README.md"), "Quick start")
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", quick_start, flags=re.MULTILINE | re.DOTALL)
    commands = [
        line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines() if line.strip()
    ]
    assert commands == ["make run", "make test"]


def test_the_readme_key_scope_table_names_the_resource_of_every_route() -> None:
    """Each route's required key scope (as the route walker proves it) is in the README row of its path."""
    table = _section(_read("README.md"), "API key scopes")
    rows = dict(re.findall(r"^\| `([a-z]+)` \| (.*) \|$", table, flags=re.MULTILINE))
    wrong = []
    for (method, path), (required, _) in SAMPLES.items():
        resource = required.split()[0].split(":")[0]
        prefixes = re.findall(r"`(/[^`]*)`", rows.get(resource, ""))
        if not any(path.startswith(prefix) for prefix in prefixes):
            wrong.append(f"{method} {path} needs {required}")
    assert not wrong, f"README.md's API key scope table does not match the routes: {wrong}"


def test_the_readme_lists_every_route_that_accepts_an_idempotency_key() -> None:
    conventions = _section(_read("README.md"), "HTTP conventions")
    idempotency = next(line for line in conventions.split("\n- ") if line.startswith("**Idempotency:**"))
    app = create_app(Settings())
    accepting = {
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if any(parameter["name"] == "Idempotency-Key" for parameter in operation.get("parameters", []))
    }
    assert "POST /v1/sessions" in accepting, f"the header is not in the schema: {sorted(accepting)}"
    listed = set(re.findall(r"`([A-Z]+ /[^`]*)`", " ".join(idempotency.split())))
    assert listed == accepting
