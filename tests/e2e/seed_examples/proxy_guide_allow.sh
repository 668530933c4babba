curl -X POST https://haldir.xyz/v1/proxy/policies \
  -H "Authorization: Bearer hld_xxx" \
  -H "Content-Type: application/json" \
  -d '{
    "type": "allow",
    "tools": ["scan_domain", "dns_lookup", "whois_lookup", "get_headers"]
  }'
