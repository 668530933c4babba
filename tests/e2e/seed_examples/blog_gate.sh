curl -X POST https://haldir.xyz/v1/sessions \
  -H "Authorization: Bearer hld_xxx" \
  -H "Content-Type: application/json" \
  -d '{
    "agent_id": "data-analyst",
    "scopes": ["read"],
    "ttl": 1800
  }'
