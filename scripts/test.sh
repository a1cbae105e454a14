#!/usr/bin/env bash
# Sets up everything the tests need (SIPp from Debian's sip-tester, the package with its test extras)
# and runs the whole suite. This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the tests drive: SIPp (sip-tester), Kamailio (benchmark reference and the scale-out
# dispatcher), stunnel4 (TLS in front of SIPp, which Debian builds without TLS), openssl (test certificates).
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || missing+=(kamailio)
command -v stunnel >/dev/null 2>&1 || command -v stunnel4 >/dev/null 2>&1 || missing+=(stunnel4)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# The install compiles the SIP core with mypyc (setup.py); the suite runs on that build, the one
# that ships, then the few tests that watch the core by patching it run on the Python source.
python3 -m pip install -q -e '.[test,bench]'
CALLERID_PROXY_REQUIRE_COMPILED=1 python3 -m pytest -q "$@"
CALLERID_PROXY_PURE=1 python3 -m pytest -q -m source_build "$@"
