"""The API fuzzed from its own OpenAPI document (schemathesis), in-process, as four callers: a key with every
scope, a key with `audit:read` only, no key, and made-up credentials. Whatever they send, no answer is a 5xx;
every answer has a documented status, media type, schema and headers; an error is the envelope with a code its
status documents; a caller without a valid key gets 401 and a narrow key never gets past the scope it lacks;
no answer names another tenant's ids that the request did not name itself; an undocumented method gets 405."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from haldir.http.app import create_app
from haldir.http.openapi import codes_by_status
from haldir.settings import Settings
from tests.conftest import Api
from tests.http.routes import AUTHENTICATED, PUBLIC, SAMPLES, WALKER_HOOK_URL

pytestmark = pytest.mark.anyio

# Each example is one request, sent as each caller: 600 is about 8 per operation (72), per store, and takes
# 9 to 30 s a store on a 2-core machine, by its load (bench/README.md).
FUZZ = settings(
    max_examples=600,
    derandomize=True,  # the same requests on every run, so CI is reproducible
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure's report holds its curl command
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app per test, shared by its examples, on purpose
        HealthCheck.too_slow,  # each example is a request, on a shared machine
        HealthCheck.data_too_large,  # schemathesis's cases are large
        HealthCheck.filter_too_much,  # ... and its negative cases filter
        HealthCheck.large_base_example,
    ],
    database=None,
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
BASE_URL = "http://haldir.test"
TENANT_A, TENANT_B = "fuzz-tenant-a", "fuzz-tenant-b"
TENANTS = (TENANT_A, TENANT_B)
PLACEHOLDER = "@fuzz-id:"  # a path parameter that a seeded id replaces when the case is sent
NARROW_SCOPE = "audit:read"
CALLERS = ("every scope", "narrow", "no key", "made-up key")
UNKEYED = ("no key", "made-up key")
KEY_HEADERS = ("authorization", "x-api-key")


@dataclass
class Fuzz:
    api: Api
    keys: dict[str, str | None]
    ids: dict[str, dict[str, str]]  # by tenant, its resources named by the path parameter that takes them
    sent: Counter[str] = field(default_factory=Counter)  # requests sent, by caller
    statuses: Counter[int] = field(default_factory=Counter)


async def _seed(client: httpx.AsyncClient, key: str, tenant: str) -> dict[str, str]:
    """One of each resource an id names, owned by `tenant` (whose key `key` is), named after it."""
    headers = {"Authorization": f"Bearer {key}"}

    async def post(path: str, body: object | None = None, status: int = 201) -> dict[str, Any]:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == status, (path, response.text)
        found: dict[str, Any] = response.json()
        return found

    spender = await post(
        "/v1/sessions", {"agent_id": f"agent-{tenant}", "scopes": ["spend"], "spend_limit": "10"}
    )
    executor = await post("/v1/sessions", {"agent_id": f"agent-{tenant}", "scopes": ["execute"]})
    secret = f"secret-{tenant}"
    await post("/v1/secrets", {"name": secret, "value": f"value-{tenant}"})
    authorization = await post("/v1/payments/authorize", {"session_id": spender["session_id"], "amount": "1"})
    entry = await post(
        "/v1/audit", {"session_id": spender["session_id"], "tool": f"tool-{tenant}", "action": "a"}
    )
    audit_rule = await post("/v1/audit/rules", {"type": "tool_match", "pattern": f"t-{tenant}-*"})
    policy = await post("/v1/proxy/policies", {"type": "deny", "tools": [f"t-{tenant}"]})
    approval_rule = await post("/v1/approvals/rules", {"type": "spend_over", "threshold": "1000"})
    approval = await post(
        "/v1/approvals/request",
        {"session_id": spender["session_id"], "tool": f"wire-{tenant}", "amount": "2"},
    )
    call = await post(
        f"/v1/tools/local-{tenant}/begin", {"session_id": executor["session_id"], "arguments": {}}
    )
    hook = await post("/v1/webhooks", {"url": WALKER_HOOK_URL, "events": ["budget.threshold"]})
    delivery = await post(f"/v1/webhooks/{hook['webhook_id']}/test", status=202)
    made = await post("/v1/keys", {"name": f"key-{tenant}", "scopes": ["audit:read"]})
    return {
        "session_id": spender["session_id"],
        "execute_session_id": executor["session_id"],
        "name": secret,
        "authorization_id": authorization["authorization_id"],
        "entry_id": entry["entry_id"],
        "audit_rule_id": audit_rule["rule_id"],
        "policy_id": policy["policy_id"],
        "approval_rule_id": approval_rule["rule_id"],
        "approval_id": approval["approval_id"],
        "call_id": call["call_id"],
        "tool": f"local-{tenant}",
        "webhook_id": hook["webhook_id"],
        "delivery_id": delivery["delivery_id"],
        "prefix": made["prefix"],
        # Not path parameters; what else of the tenant's must never reach another tenant.
        "tenant_id": tenant,
        "agent_id": f"agent-{tenant}",
        "audited_tool": f"tool-{tenant}",
        "secret_value": f"value-{tenant}",
        "webhook_secret": hook["secret"],
        "key_value": key,
    }


@pytest.fixture
async def fuzz(api: Api) -> AsyncIterator[Fuzz]:
    keys: dict[str, str | None] = {
        "every scope": await api.key("*", tenant=TENANT_A),
        "narrow": await api.key(NARROW_SCOPE, tenant=TENANT_A),
        "no key": None,
        "made-up key": None,  # the credentials schemathesis makes from the security schemes
    }
    ids = {tenant: await _seed(api.client, await api.key("*", tenant=tenant), tenant) for tenant in TENANTS}
    fuzzed = Fuzz(api=api, keys=keys, ids=ids)
    yield fuzzed
    # The run's figures, for bench/README.md: `pytest -s tests/http/test_schema_fuzz.py` prints them.
    if fuzzed.sent:
        print(
            f"\nschema fuzz: {dict(fuzzed.sent)} requests, statuses {dict(sorted(fuzzed.statuses.items()))}"
        )


@cache
def _operations() -> list[APIOperation]:
    """The operations of the app's OpenAPI document (building the app opens nothing)."""
    app = create_app(Settings(data_dir=Path("unused"), custom_scopes=("stripe",), stdio_tenants=("acme",)))
    schema = schemathesis.openapi.from_dict(app.openapi())
    return [result.ok() for result in schema.get_all_operations()]


def _path_ids(operation: APIOperation, tenant: str) -> dict[str, str] | None:
    """Placeholders for one tenant's resources in this operation's path parameters (filled in when sent),
    or None when it has none."""
    names = [parameter.name for parameter in operation.path_parameters]
    if not names:
        return None
    rule = "approval_rule_id" if "/approvals/" in operation.path else "audit_rule_id"
    return {name: f"{PLACEHOLDER}{tenant}:{rule if name == 'rule_id' else name}" for name in names}


@cache
def _cases(operation: APIOperation) -> st.SearchStrategy[Case]:
    """Valid and invalid requests; those with a path id often name a real one, of either tenant."""
    raw = operation.definition.raw
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if raw.get("parameters") or raw.get("requestBody") or raw.get("security"):  # else nothing to break
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    for tenant in TENANTS:
        known = _path_ids(operation, tenant)
        if known:
            strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known))
    return st.one_of(strategies)


def any_operation() -> st.SearchStrategy[Case]:
    """A case of any operation. Drawn by Hypothesis before the test's coroutine runs (a draw that outgrows
    its buffer ends with a BaseException, which would stop the event loop's runner if raised inside it);
    one operation per example, as a case per operation would outgrow it every time."""
    return st.deferred(lambda: st.sampled_from(_operations()).flatmap(_cases))


def _fill(case: Case, ids: Mapping[str, Mapping[str, str]]) -> None:
    for name, value in (case.path_parameters or {}).items():
        if isinstance(value, str) and value.startswith(PLACEHOLDER):
            tenant, _, what = value.removeprefix(PLACEHOLDER).partition(":")
            case.path_parameters[name] = ids[tenant][what]  # type: ignore[index]


def _prepare(case: Case, caller: str, key: str | None) -> requests.PreparedRequest:
    """The request exactly as schemathesis serializes it, with the caller's key in place of any it made."""
    sent = case.as_transport_kwargs(base_url=BASE_URL)
    headers = {
        k: v
        for k, v in (sent.pop("headers") or {}).items()
        if k.lower() not in KEY_HEADERS or caller == "made-up key"
    }
    if caller == "made-up key" and not any(k.lower() in KEY_HEADERS for k in headers):
        headers["X-API-Key"] = "hld_made_up"
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return requests.Request(headers=headers, **sent).prepare()  # type: ignore[no-untyped-call]


def _envelope(response: httpx.Response, codes: Mapping[int, list[str]]) -> str | None:
    """What is wrong with an error answer's envelope, or None."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return "an error that is not JSON"
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("error", "code")):
        return f"an error without the envelope: {body!r}"
    if body.get("request_id") != response.headers.get("x-request-id"):
        return "an error whose request_id is not its X-Request-ID"
    if body["code"] not in codes.get(response.status_code, ()):
        return f"code {body['code']!r} is not documented for {response.status_code}"
    return None


def _caller_rule(caller: str, route: tuple[str, str]) -> Callable[[int], bool]:
    """Which statuses the caller may get from a route, whatever it sends."""
    if route in PUBLIC:
        return lambda status: True
    if caller in UNKEYED:
        return lambda status: status == 401
    if caller == "narrow" and route not in AUTHENTICATED and NARROW_SCOPE not in SAMPLES[route][0].split():
        return lambda status: status in (400, 403)  # input may be refused before the scope is checked
    return lambda status: True


def _leaks(response: httpx.Response, sent: requests.PreparedRequest, others: Mapping[str, str]) -> list[str]:
    """Ids of other tenants in an answer that the request did not name itself."""
    request_text = (sent.url or "") + str(sent.body or "")
    return [v for v in others.values() if v in response.text and v not in request_text]


async def _send(fuzz: Fuzz, caller: str, case: Case) -> list[str]:
    """Send one case as `caller`; what went wrong, one line each."""
    _fill(case, fuzz.ids)
    sent = _prepare(case, caller, fuzz.keys[caller])
    response = await fuzz.api.client.request(
        sent.method or "GET", sent.url or "", headers=dict(sent.headers), content=sent.body
    )
    fuzz.sent[caller] += 1
    fuzz.statuses[response.status_code] += 1
    label = f"{case.operation.label} as {caller} -> {response.status_code}"
    problems = []
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as failures:
        problems += [f"{label}: {failure.title}: {failure.message}" for failure in failures.exceptions]
    wrong = _envelope(response, codes_by_status())
    if wrong:
        problems.append(f"{label}: {wrong}")
    route = (case.operation.method.upper(), case.operation.path)
    if not _caller_rule(caller, route)(response.status_code):
        problems.append(f"{label}: a status this caller must never get: {response.text[:200]}")
    # The keys are tenant A's: nothing of tenant B's reaches them, and nothing of either reaches the others.
    others = fuzz.ids[TENANT_B] if caller not in UNKEYED else {**fuzz.ids[TENANT_A], **fuzz.ids[TENANT_B]}
    problems += [f"{label}: names another tenant's {leak!r}" for leak in _leaks(response, sent, others)]
    if problems:
        key = {"Authorization": f"Bearer <the {caller} key>"} if fuzz.keys[caller] else {}
        problems.append(f"    reproduce: {case.as_curl_command(headers=key, base_url=BASE_URL)}")
    return problems


@FUZZ
@given(case=any_operation())
async def test_every_operation_answers_as_documented(fuzz: Fuzz, case: Case) -> None:
    problems: list[str] = []
    for caller in CALLERS:
        problems += await _send(fuzz, caller, case)
    assert not problems, "\n".join(problems)


async def test_every_path_answers_an_undocumented_method_with_405(fuzz: Fuzz) -> None:
    # What schemathesis's `unsupported_method` check asks, for every path and method at once.
    problems = []
    paths: dict[str, set[str]] = {}
    for operation in _operations():
        paths.setdefault(operation.path, set()).add(operation.method.upper())
    templates = {path: re.compile(re.sub(r"\{[^}]+\}", "[^/]+", path)) for path in paths}
    for path in paths:
        url = re.sub(r"\{[^}]+\}", "x", path)
        # The methods of every template the URL matches: DELETE /v1/keys/{prefix} takes /v1/keys/current.
        documented = set().union(*(paths[other] for other, rx in templates.items() if rx.fullmatch(url)))
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - documented):
            response = await fuzz.api.client.request(method, url, headers={"Authorization": "Bearer x"})
            wrong = _envelope(response, codes_by_status())
            allowed = set(response.headers.get("allow", "").replace(" ", "").split(","))
            if response.status_code != 405 or wrong or not documented <= allowed:
                problems.append(f"{method} {url} -> {response.status_code} {wrong or ''} allow={allowed}")
    assert not problems, "\n".join(problems)
