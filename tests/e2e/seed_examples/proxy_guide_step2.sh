curl -X POST https://haldir.xyz/v1/sessions \
  -H "Authorization: Bearer hld_xxx" \
  -H "Content-Type: application/json" \
  -d '{
    "agent_id": "research-bot",
    "scopes": ["read", "execute", "spend"],
    "spend_limit": 25.00,
    "ttl": 3600
  }'
