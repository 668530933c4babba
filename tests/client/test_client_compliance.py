"""The SDK's compliance methods on both clients: the pack as the server wrote it, and the manifest check."""

from __future__ import annotations

import json
from datetime import date

import httpx
import pytest

from haldir import AsyncHaldirClient, HaldirClient, InsufficientScope
from haldir.core.checkpoints import Verifier
from haldir.core.evidence import verify_evidence
from tests.client.inprocess import AppTransport, blocking
from tests.conftest import Api

pytestmark = pytest.mark.anyio

BASE = "http://haldir.test"


async def test_the_async_client_fetches_a_pack_and_has_it_confirmed(api: Api) -> None:
    api.clock.advance(60)
    transport = httpx.ASGITransport(app=api.app)
    async with AsyncHaldirClient(api.admin_key, base_url=BASE, transport=transport) as client:
        verifier = Verifier.from_vkey((await client.log_key())["vkey"])
        document = await client.compliance_evidence(since=date(2026, 1, 1), format="md")
        verified = verify_evidence(document, verifier)
        assert verified.period_since.isoformat() == "2026-01-01T00:00:00+00:00"
        confirmed = await client.check_evidence_manifest(document)  # a Markdown document, as written
        assert (confirmed["valid"], confirmed["digest"]) == (True, verified.digest)
        as_json = json.loads(await client.compliance_evidence())
        assert (await client.check_evidence_manifest(as_json))["valid"] is True


async def test_the_blocking_client_has_the_same_compliance_methods(api: Api) -> None:
    api.clock.advance(60)
    reader = await api.key("audit:read")

    def work() -> tuple[bool, str]:
        with HaldirClient(api.admin_key, base_url=BASE, transport=AppTransport(api.app)) as client:
            document = client.compliance_evidence()
        with HaldirClient(reader, base_url=BASE, transport=AppTransport(api.app)) as auditor:
            with pytest.raises(InsufficientScope):
                auditor.compliance_evidence()
            return bool(auditor.check_evidence_manifest(document)["valid"]), document

    valid, document = await blocking(work)
    assert valid
    assert document.endswith("}\n")


async def test_an_unknown_format_is_refused_before_any_request(api: Api) -> None:
    async with AsyncHaldirClient(
        api.admin_key, base_url=BASE, transport=httpx.ASGITransport(app=api.app)
    ) as client:
        with pytest.raises(ValueError, match="'json' or 'md'"):
            await client.compliance_evidence(format="pdf")  # type: ignore[arg-type]
