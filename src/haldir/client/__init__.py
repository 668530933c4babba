"""The Python SDK: Haldir over HTTP, blocking or for asyncio."""

from haldir.client.aio import AsyncHaldirClient
from haldir.client.sync import HaldirClient

__all__ = ["AsyncHaldirClient", "HaldirClient"]
