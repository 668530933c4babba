from haldir import HaldirClient

h = HaldirClient(api_key="hld_xxx")

session = h.create_session(
    agent_id="scanner-bot",
    scopes=["read", "execute"],
    spend_limit=10.00,
    ttl=1800
)

# Call through the proxy — governance is automatic
result = h._request("POST", "/v1/proxy/call", json={
    "tool": "scan_domain",
    "arguments": {"domain": "example.com"},
    "session_id": session["session_id"]
})

print(result)
