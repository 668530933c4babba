"""The proxy: live connections to upstream MCP servers and the governed call through them."""

from haldir.proxy.outbound import check_outbound_url
from haldir.proxy.upstreams import UpstreamConfig, UpstreamPool

__all__ = ["UpstreamConfig", "UpstreamPool", "check_outbound_url"]
