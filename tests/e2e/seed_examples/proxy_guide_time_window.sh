curl -X POST https://haldir.xyz/v1/proxy/policies \
  -H "Authorization: Bearer hld_xxx" \
  -H "Content-Type: application/json" \
  -d '{
    "type": "time_window",
    "allowed_hours": {"start": "09:00", "end": "17:00"},
    "timezone": "America/New_York"
  }'
