# Query the full audit trail for an agent
curl "https://haldir.xyz/v1/audit?agent_id=order-processing-bot" \
  -H "Authorization: Bearer hld_xxx"
