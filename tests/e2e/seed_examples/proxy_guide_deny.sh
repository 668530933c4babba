curl -X POST https://haldir.xyz/v1/proxy/policies \
  -H "Authorization: Bearer hld_xxx" \
  -H "Content-Type: application/json" \
  -d '{
    "type": "deny",
    "tools": ["delete_database", "drop_table", "send_wire_transfer"]
  }'
