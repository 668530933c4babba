curl -X POST https://haldir.xyz/v1/proxy/upstreams \
  -H "Authorization: Bearer hld_xxx" \
  -H "Content-Type: application/json" \
  -d '{
    "name": "security-tools",
    "url": "https://my-mcp-server.com/mcp"
  }'
