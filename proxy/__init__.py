"""callerid-proxy: asyncio glue around the sans-IO SIP core in `proxy.sip`."""

from proxy.compiled_core import CoreBuild, use_fresh_build

# Before anything imports proxy.sip: its compiled build only when fresh (proxy/compiled_core.py).
CORE_BUILD: CoreBuild = use_fresh_build()
