"""The dashboard in-process: the `api` fixture's app, and browsers-without-a-browser that sign in to it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import Api

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, f"no CSRF field in the page: {html[:500]}"
    return found.group(1)


@dataclass
class Browser:
    """An httpx client that keeps cookies like a browser and posts forms as one (same-origin headers)."""

    client: httpx.AsyncClient
    csrf: str = ""

    async def sign_in(self, key: str) -> httpx.Response:
        form = await self.client.get("/ui/login")
        assert form.status_code == 200, form.text
        response = await self.post("/ui/login", {"api_key": key, "csrf": csrf_of(form.text)})
        if response.status_code == 303:
            overview = await self.client.get("/ui/sessions")
            self.csrf = csrf_of(overview.text) if overview.status_code == 200 else ""
        return response

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params)

    async def post(self, path: str, data: dict[str, str], **headers: str) -> httpx.Response:
        sent = {"Sec-Fetch-Site": "same-origin", **headers}
        return await self.client.post(path, data=data, headers=sent)

    async def act(self, path: str, **fields: str) -> httpx.Response:
        """Post a dashboard form with this browser's CSRF token."""
        return await self.post(path, {"csrf": self.csrf, **fields})


@pytest.fixture
async def browser(api: Api) -> AsyncIterator[Browser]:
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
        yield Browser(client)


@pytest.fixture
async def second_browser(api: Api) -> AsyncIterator[Browser]:
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
        yield Browser(client)
