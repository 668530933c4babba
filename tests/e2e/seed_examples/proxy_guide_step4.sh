curl -X POST https://haldir.xyz/v1/proxy/call \
  -H "Authorization: Bearer hld_xxx" \
  -H "Content-Type: application/json" \
  -d '{
    "tool": "scan_domain",
    "arguments": {"domain": "example.com"},
    "session_id": "ses_a1b2c3d4"
  }'
