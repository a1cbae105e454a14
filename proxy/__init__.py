"""callerid-proxy: asyncio glue around the sans-IO SIP core in `proxy.sip`."""
