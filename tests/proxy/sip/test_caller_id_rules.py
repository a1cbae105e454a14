"""The core with the real rules adapter: withheld calls, emergency calls, trunk number formats,
user_source and display names, bytes in and bytes out (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rules
from proxy.active_rules import ActiveRules
from proxy.metrics import EventLog
from proxy.sip.core import ProxyCore
from proxy.sip.events import CallerIdDecided
from proxy.sip.policy import ProxyConfig
from tests.proxy.sip.support import (
    BACKUP,
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    PROXY,
    SECRET,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    head_lines,
    header_name,
    in_dialog,
    invite,
    response_to,
    sent_to,
    value,
    values,
)

RULES = """\
country: BE
numbers:
  - "+3228880000"
  - number: "+3228880001"
    name: "ACME Sales"
  - "+442071234567"
default_outgoing_number: "+3228880000"
users:
  "1001": "+3228880001"
  "1003": anonymous
  "1006": {number: "+3228880001", name: "Helpdesk"}
advanced_rules:
  local_presence: true
user_source: [x-extension, from]
trunks:
  "2": {number_format: national, host: "sip.provider.example"}
  "3": {number_format: international_prefix, host: pbx}
"""
ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=pbx-tag-1'
CHANGED = {"via", "from", "max-forwards", "p-asserted-identity", "p-preferred-identity",
           "remote-party-id", "record-route", "privacy"}
THIRD = type(TRUNK)("udp", "127.0.0.3", 5090)


def make(text: str = RULES) -> Clocked:
    policy = ActiveRules(Path("rules.yaml"), rules.loads(text, "rules.yaml"))
    config = ProxyConfig(
        advertised=(PROXY,), pbx=PBX, trunk=TRUNK, extra_trunks=(BACKUP, THIRD), secret=SECRET
    )
    return Clocked(ProxyCore(config, policy))


def send(request: bytes, clocked: Clocked | None = None) -> bytes:
    out = (clocked or make()).receive(request, PBX_SOURCE)
    (to_trunk,) = sent_to(out, TRUNK)
    return to_trunk


def untouched(request: bytes, forwarded: bytes) -> None:
    def kept(data: bytes) -> list[str]:
        return [line for line in head_lines(data) if header_name(line) not in CHANGED]

    assert kept(forwarded) == kept(request)


def test_a_withheld_user_sends_anonymous_from_privacy_id_and_the_number_in_pai() -> None:
    rpid = 'Remote-Party-ID: <sip:1003@pbx.example.com>;party=calling;privacy=off\r\n'
    request = invite(user="1003", to="00442079460000", extra=rpid)
    forwarded = send(request)
    assert value(forwarded, "From") == ANONYMOUS_FROM
    assert value(forwarded, "Privacy") == "id"
    assert value(forwarded, "P-Asserted-Identity") == (
        '"+442071234567" <sip:+442071234567@127.0.0.1>'
    )
    assert values(forwarded, "Remote-Party-ID") == []
    assert values(forwarded, "P-Preferred-Identity") == []
    untouched(request, forwarded)


def test_the_pbx_gets_its_own_from_back_on_a_withheld_call() -> None:
    clocked = make()
    forwarded = send(invite(user="1003"), clocked)
    ok = response_to(forwarded, 200, "OK", extra="Contact: <sip:callee@127.0.0.1:5080>")
    (to_pbx,) = sent_to(clocked.receive(ok, TRUNK_SOURCE, at=0.1), PBX)
    assert value(to_pbx, "From") == ORIGINAL_FROM.replace("1001", "1003")
    (record_route,) = values(to_pbx, "Record-Route")
    bye = in_dialog(
        "BYE",
        uri="sip:1003@127.0.0.1:5070",
        via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-trunk-bye",
        from_="<sip:00442079460000@127.0.0.1>;tag=trunk-1",
        to=ANONYMOUS_FROM,
        cseq=1,
        route=record_route,
    )
    (bye_to_pbx,) = sent_to(clocked.receive(bye, TRUNK_SOURCE, at=1.0), PBX)
    assert value(bye_to_pbx, "To") == ORIGINAL_FROM.replace("1001", "1003")


@pytest.mark.parametrize("privacy", ["id", "ID", "header;id", "id;critical", "user, id"])
def test_privacy_id_from_the_phone_is_kept_withheld(privacy: str) -> None:
    request = invite(user="1001", to="+442079460000", extra=f"Privacy: {privacy}\r\n")
    forwarded = send(request)
    assert value(forwarded, "From") == ANONYMOUS_FROM
    assert values(forwarded, "Privacy") == ["id"]
    assert value(forwarded, "P-Asserted-Identity") == (
        '"ACME Sales" <sip:+3228880001@127.0.0.1>'
    )


def test_privacy_without_id_is_not_a_withheld_call() -> None:
    request = invite(user="1001", extra="Privacy: header\r\n")
    forwarded = send(request)
    assert value(forwarded, "From").startswith('"ACME Sales" <sip:+3228880001@127.0.0.1>')
    assert values(forwarded, "Privacy") == ["header"]


@pytest.mark.parametrize("user", ["1001", "1003"])
def test_an_emergency_call_is_never_withheld(user: str) -> None:
    request = invite(user=user, to="112", extra="Privacy: id\r\n")
    forwarded = send(request)
    number = "+3228880001" if user == "1001" else "+3228880000"
    assert f"<sip:{number}@127.0.0.1>;tag=pbx-tag-1" in value(forwarded, "From")
    assert values(forwarded, "Privacy") == []
    assert f"sip:{number}@" in value(forwarded, "P-Asserted-Identity")


def failover_to(index: int, request: bytes) -> bytes:
    """The copy trunk `index` gets after the earlier trunks answered 503."""
    clocked = make()
    trunks = (TRUNK, BACKUP, THIRD)
    out = clocked.receive(request, PBX_SOURCE)
    for position in range(index):
        (sent,) = sent_to(out, trunks[position])
        source = type(PBX_SOURCE)("udp", trunks[position].host, trunks[position].port)
        out = clocked.receive(response_to(sent, 503, "Unavailable"), source, at=0.1 * position)
    (sent,) = sent_to(out, trunks[index])
    return sent


def test_each_trunk_gets_the_number_in_its_format() -> None:
    request = invite(user="1001", to="+4915112345678")
    first, second, third = (failover_to(i, request) for i in range(3))
    assert value(first, "From").startswith('"ACME Sales" <sip:+3228880001@127.0.0.1>;tag=')
    assert value(second, "From").startswith(
        '"ACME Sales" <sip:028880001@sip.provider.example>;tag='
    )
    assert value(second, "P-Asserted-Identity") == (
        '"ACME Sales" <sip:028880001@sip.provider.example>'
    )
    assert value(third, "From").startswith('"ACME Sales" <sip:003228880001@pbx.example.com>')


def test_a_withheld_call_on_a_national_trunk_has_pai_in_national_form() -> None:
    forwarded = failover_to(1, invite(user="1003", to="025551234"))
    assert value(forwarded, "From") == ANONYMOUS_FROM
    assert value(forwarded, "P-Asserted-Identity") == (
        '"+3228880000" <sip:028880000@sip.provider.example>'
    )


def test_user_source_reads_the_extension_from_a_header() -> None:
    request = invite(user="+3228880000", to="+4915112345678", extra="X-Extension: 1006\r\n")
    assert value(send(request), "From").startswith('"Helpdesk" <sip:+3228880001@127.0.0.1>')
    # Without the header the From user part counts; it is one of the company's numbers.
    request = invite(user="+3228880000", to="+4915112345678")
    assert value(send(request), "From").startswith('"+3228880000" <sip:+3228880000@')


def test_the_pbx_display_name_is_kept_when_asked() -> None:
    forwarded = send(invite(user="1001"), make(RULES + "keep_pbx_display_name: true\n"))
    assert value(forwarded, "From").startswith('"Alice" <sip:+3228880001@127.0.0.1>')


def test_the_log_line_names_step_and_privacy(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="callerid_proxy.core")
    clocked = make()
    send(invite(user="1003", to="00442079460000"), clocked)
    events = clocked.core.events_to_handle()  # the core emits events; the glue logs them
    (decided,) = [e for e in events if isinstance(e, CallerIdDecided)]
    assert (decided.step, decided.privacy) == ("local presence", True)
    EventLog().handle(events)
    (line,) = [r.getMessage() for r in caplog.records if "shown=" in r.getMessage()]
    assert "user=1003 destination=00442079460000 shown=+442071234567" in line
    assert "step=local presence privacy=id" in line


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["1001", "1003", "1006", "9999", "+3228880000"]),
    st.sampled_from(["112", "00442079460000", "025551234", "sip:bob", "+4915112345678"]),
    st.sampled_from(["", "Privacy: id\r\n", "Privacy: none\r\n", "X-Extension: 1003\r\n"]),
)
def test_property_headers_the_rules_do_not_own_pass_byte_identical(
    user: str, to: str, extra: str
) -> None:
    request = invite(user=user, to=to, extra=extra)
    forwarded = send(request)
    untouched(request, forwarded)
    withheld = value(forwarded, "From") == ANONYMOUS_FROM
    assert values(forwarded, "Privacy") == (["id"] if withheld else values(forwarded, "Privacy"))
    assert len(values(forwarded, "P-Asserted-Identity")) == 1
    if withheld:
        assert to != "112"


def test_a_kept_display_name_with_quotes_is_escaped_once() -> None:
    request = invite(user="1001").replace(b'From: "Alice"', b'From: "Al \\"x\\" \\\\"')
    forwarded = send(request, make(RULES + "keep_pbx_display_name: true\n"))
    assert value(forwarded, "From").startswith('"Al \\"x\\" \\\\" <sip:+3228880001@127.0.0.1>')


header_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80
).filter(lambda text: text.strip() != "")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["X-Extension", "P-Preferred-Identity", "Remote-Party-ID", "Contact"]),
       header_text)
def test_property_any_user_header_value_gives_a_forwarded_call_never_a_crash(
    name: str, text: str
) -> None:
    """Whatever the PBX writes where user_source looks, the call is decided and forwarded, the
    trunk seeing one PAI, or (a malformed Contact or Remote-Party-ID) answered 400."""
    clocked = make(RULES.replace("user_source: [x-extension, from]",
                                 "user_source: [x-extension, p-preferred-identity, "
                                 "remote-party-id, contact, from]"))
    request = invite(user="1002", extra=f"{name}: {text}\r\n")
    out = clocked.receive(request, PBX_SOURCE)
    to_trunk = sent_to(out, TRUNK)
    if to_trunk:
        assert len(values(to_trunk[0], "P-Asserted-Identity")) == 1
    else:
        assert out and out[-1].data.startswith(b"SIP/2.0 400 "), out
