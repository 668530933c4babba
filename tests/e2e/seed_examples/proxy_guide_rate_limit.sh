curl -X POST https://haldir.xyz/v1/proxy/policies \
  -H "Authorization: Bearer hld_xxx" \
  -H "Content-Type: application/json" \
  -d '{
    "type": "rate_limit",
    "max_calls": 100,
    "window_seconds": 3600
  }'
