#!/usr/bin/env bash
# Place one call through a proxy started with the README's quick-start command, with SIPp playing
# the PBX (127.0.0.1:5070) and the trunk (127.0.0.1:5080), and show what the trunk saw.
#   bash scripts/demo_call.sh [USER] [DESTINATION] [EXPECTED_NUMBER] [EXPECTED_DISPLAY]
# Defaults: user 1002 dials 00442079460000, and the example rules make the trunk see
# "ACME UK" <sip:+442071234567@127.0.0.1>. The trunk side fails the call if it sees anything else.
# PROXY_PORT, PBX_PORT, TRUNK_PORT (5060, 5070, 5080) and CONTROL_PORT (18888, and the next one:
# SIPp's control sockets) may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
user=${1:-1002}
destination=${2:-00442079460000}
expected=${3:-+442071234567}
display=${4:-ACME UK}
proxy_port=${PROXY_PORT:-5060}
pbx_port=${PBX_PORT:-5070}
trunk_port=${TRUNK_PORT:-5080}
control_port=${CONTROL_PORT:-18888}
work=$(mktemp -d)
trap 'kill "$trunk_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

command -v sipp >/dev/null || { echo "sipp is missing: bash scripts/test.sh installs it" >&2; exit 2; }
sipp -sf sipp_scenarios/trunk_uas_call.xml -i 127.0.0.1 -p "$trunk_port" -m 1 -timeout 20 -nostdin \
    -ci 127.0.0.1 -cp "$control_port" -set expected_number "$expected" -set expected_display "$display" \
    -set expected_host 127.0.0.1 -trace_msg -message_file "$work/trunk.log" \
    -trace_err -error_file "$work/trunk_errors.log" >/dev/null 2>&1 &
trunk_pid=$!
sleep 0.5
if sipp -sf sipp_scenarios/pbx_uac_call.xml "127.0.0.1:$proxy_port" -i 127.0.0.1 -p "$pbx_port" \
    -m 1 -timeout 20 -nostdin -ci 127.0.0.1 -cp "$((control_port + 1))" -set pbx_user "$user" \
    -set destination "$destination" -trace_err -error_file "$work/pbx_errors.log" \
    >/dev/null 2>&1 && wait "$trunk_pid"; then
    echo "call from $user to $destination: the trunk saw"
    grep -m1 -A12 "^INVITE " "$work/trunk.log" | grep -E "^(From|P-Asserted-Identity|Record-Route):"
    echo "and the PBX got its own From back on every response."
else
    echo "the call failed; SIPp said:" >&2
    cat "$work"/*errors.log >&2 2>/dev/null || true
    exit 1
fi
