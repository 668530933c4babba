from haldir import HaldirClient

h = HaldirClient(api_key="hld_xxx")

# Register multiple upstreams if you have several MCP servers
upstreams = [
    ("security-tools", "https://security-mcp.internal/mcp"),
    ("data-tools", "https://data-mcp.internal/mcp"),
    ("comms-tools", "https://comms-mcp.internal/mcp"),
]

for name, url in upstreams:
    h._request("POST", "/v1/proxy/upstreams", json={"name": name, "url": url})
    print(f"Registered upstream: {name}")
