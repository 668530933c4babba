curl https://haldir.xyz/v1/proxy/tools \
  -H "Authorization: Bearer hld_xxx"
