"""Operator metrics for Prometheus: off by default; on, they count requests by route template and status,
time them, count governed calls by decision and commit batches, and carry no tenant data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from haldir.core.keys import Principal
from haldir.http.app import create_app
from haldir.http.metrics import MULTIPROCESS_DIR
from haldir.settings import Settings
from tests.support import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served(store_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    settings = Settings(data_dir=tmp_path, database_url=store_url, metrics=True)
    app = create_app(settings, clock=FakeClock())
    async with app.router.lifespan_context(app):
        created = await app.state.governor.keys.create_key(
            Principal.operator("acme-secret-tenant"), name="k", scopes=["*"]
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
            yield client, str(created.value.value)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_are_not_served_unless_enabled(store_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, database_url=store_url), clock=FakeClock())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
            assert (await client.get("/metrics")).status_code == 404


async def test_requests_are_counted_by_route_template_and_status(
    served: tuple[httpx.AsyncClient, str],
) -> None:
    client, key = served
    auth = {"Authorization": f"Bearer {key}"}
    session = await client.post("/v1/sessions", json={"agent_id": "bot-7", "scopes": ["read"]}, headers=auth)
    session_id = session.json()["session_id"]
    for _ in range(3):
        assert (await client.get(f"/v1/sessions/{session_id}", headers=auth)).status_code == 200
    assert (await client.get("/v1/sessions/ses_nope", headers=auth)).status_code == 404
    entry = {"session_id": session_id, "tool": "t", "action": "a"}
    assert (await client.post("/v1/audit", json=entry, headers=auth)).status_code == 201
    assert (await client.get("/no/such/path")).status_code == 404

    text = (await client.get("/metrics")).text

    samples = _samples(text)
    route = "/v1/sessions/{session_id}"
    assert (
        samples[("haldir_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 3
    )
    assert (
        samples[("haldir_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] == 1
    )
    assert (
        samples[
            ("haldir_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))
        ]
        == 1
    )
    assert samples[("haldir_http_request_duration_seconds_count", (("method", "GET"), ("route", route)))] == 4
    assert samples[("haldir_ledger_entries", ())] == 1
    assert samples[("haldir_tenants", ())] >= 0
    assert ("haldir_webhook_backlog", ()) in samples
    assert samples[("haldir_store_commit_batch_size_count", ())] >= 1  # the entry's commit
    # No tenant, key, session or agent appears anywhere in what a scrape shows.
    for private in ("acme-secret-tenant", key[:12], session_id, "bot-7"):
        assert private not in text


async def test_governed_calls_are_counted_by_decision(served: tuple[httpx.AsyncClient, str]) -> None:
    client, key = served
    auth = {"Authorization": f"Bearer {key}"}
    session = await client.post("/v1/sessions", json={"agent_id": "a", "scopes": ["read"]}, headers=auth)
    call = {"session_id": session.json()["session_id"], "tool": "nowhere__tool", "arguments": {}}

    for _ in range(2):
        refused = await client.post("/v1/proxy/call", json=call, headers=auth)
        assert refused.status_code >= 400

    samples = _samples((await client.get("/metrics")).text)
    decisions = {
        labels: value for (name, labels), value in samples.items() if name == "haldir_gateway_calls_total"
    }
    code = refused.json()["code"]
    assert decisions == {(("decision", code),): 2}


_COUNT = """
import sys
from haldir.http.metrics import Metrics
Metrics().requests.labels("GET", "/v1/x", "200").inc(int(sys.argv[1]))
"""
_SHOW = (
    "from haldir.http.metrics import Metrics; import sys; sys.stdout.write(Metrics().instruments().decode())"
)


def test_counts_of_separate_worker_processes_are_summed(tmp_path: Path) -> None:
    env = {**os.environ, MULTIPROCESS_DIR: str(tmp_path)}
    for count in ("3", "4"):  # two processes, as two workers
        subprocess.run([sys.executable, "-c", _COUNT, count], env=env, check=True, timeout=60)

    shown = subprocess.run(
        [sys.executable, "-c", _SHOW], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout

    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    samples = _samples(shown)
    assert (
        samples[("haldir_http_requests_total", (("method", "GET"), ("route", "/v1/x"), ("status", "200")))]
        == 7
    )
