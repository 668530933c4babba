"""Haldir over MCP: the governance server (stdio and Streamable HTTP) and the backends it runs on."""

from haldir.mcp.backends import GovernanceBackend, LocalBackend, remote_backend
from haldir.mcp.governance import TOOLS, BackendFactory, build_governance_server
from haldir.mcp.http import (
    McpEndpoint,
    governance_endpoint,
    mount_mcp,
    request_governor,
    request_principal,
    run_mcp,
)

__all__ = [
    "TOOLS",
    "BackendFactory",
    "GovernanceBackend",
    "LocalBackend",
    "McpEndpoint",
    "build_governance_server",
    "governance_endpoint",
    "mount_mcp",
    "remote_backend",
    "request_governor",
    "request_principal",
    "run_mcp",
]
