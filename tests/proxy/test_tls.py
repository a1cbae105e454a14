"""TLS as a stream transport: the core's Via and Record-Route for a `tls` hop, replies on the
TLS connection, and the TLS contexts built from the settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from proxy.sip.addresses import Source, Target
from proxy.sip.core import ProxyCore
from proxy.sip.policy import ProxyConfig
from proxy.tls import TlsContexts, TlsSettings, TlsSettingsError
from tests.certs import TestCa
from tests.proxy.sip.support import (
    CALLEE,
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    PROXY,
    REWRITTEN_FROM,
    SECRET,
    Clocked,
    FixedPolicy,
    forwarded_invite,
    in_dialog,
    invite,
    response_to,
    sent_to,
    value,
    values,
)

OUR_TLS = Target("tls", PROXY.host, 5061)
TLS_TRUNK = Target("tls", "127.0.0.1", 5081, name="trunk.example")
TLS_TRUNK_SOURCE = Source("tls", "127.0.0.1", 5081, connection=4, dialled=TLS_TRUNK)


def tls_core() -> Clocked:
    config = ProxyConfig(
        advertised=(PROXY, Target("tcp", PROXY.host, PROXY.port), OUR_TLS),
        pbx=PBX, trunk=TLS_TRUNK, secret=SECRET,
    )
    return Clocked(ProxyCore(config, FixedPolicy()))


def test_a_tls_trunk_gets_our_tls_via_and_record_route_and_keeps_its_name() -> None:
    clocked = tls_core()
    out = clocked.receive(invite(), PBX_SOURCE)
    (to_trunk,) = [o for o in out if o.target == TLS_TRUNK]
    assert to_trunk.target.name == "trunk.example"  # what its certificate is checked against
    assert values(to_trunk.data, "Via")[0].startswith("SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK")
    top, second = values(to_trunk.data, "Record-Route")
    assert top.startswith("<sip:127.0.0.1:5061;transport=tls;lr;cid=")
    assert second == "<sip:127.0.0.1:5060;lr>"  # the PBX still sees us on UDP


def test_the_tls_trunks_answer_and_bye_come_back_restored_and_routes_are_ours() -> None:
    clocked = tls_core()
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK", extra="Contact: <sip:callee@127.0.0.1:5081;transport=tls>")
    (to_pbx,) = sent_to(clocked.receive(ok, TLS_TRUNK_SOURCE, at=0.1), PBX)
    assert value(to_pbx, "From") == ORIGINAL_FROM
    route = ", ".join(reversed(values(to_pbx, "Record-Route")))
    bye = in_dialog(
        "BYE", uri="sip:callee@127.0.0.1:5081;transport=tls",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-pbx-bye;rport",
        from_=ORIGINAL_FROM, to=CALLEE, route=route,
    )
    (forwarded,) = [o.data for o in clocked.receive(bye, PBX_SOURCE, at=2.0)
                    if o.target == TLS_TRUNK]
    assert values(forwarded, "Route") == []  # both our entries, the tls one included, removed
    assert value(forwarded, "From") == REWRITTEN_FROM


def test_a_request_over_tls_is_answered_on_its_connection() -> None:
    clocked = tls_core()
    pbx_tls = Source("tls", "127.0.0.1", 40001, connection=9)
    request = invite().replace(b"SIP/2.0/UDP 127.0.0.1:5070", b"SIP/2.0/TLS 127.0.0.1:5070")
    out = clocked.receive(request, pbx_tls)
    (trying,) = [o for o in out if o.data.startswith(b"SIP/2.0 100")]
    assert (trying.target, trying.connection) == (pbx_tls.reply_target(), 9)
    assert trying.target.transport == "tls"


def test_client_context_verifies_names_with_tls_1_2_or_later_by_default() -> None:
    contexts = TlsContexts(TlsSettings(), listening=False)
    assert contexts.client.check_hostname and contexts.client.verify_mode == ssl.CERT_REQUIRED
    assert contexts.client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert contexts.server is None
    options = contexts.dial_options(TLS_TRUNK)
    assert options == {"ssl": contexts.client, "server_hostname": "trunk.example"}
    assert contexts.dial_options(Target("tls", "10.0.0.1", 5061))["server_hostname"] == "10.0.0.1"
    assert contexts.dial_options(Target("tcp", "10.0.0.1", 5060)) == {}


def test_verification_off_and_own_certificate(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    issued = ca.issue("proxy", ["localhost"], ["127.0.0.1"])
    settings = TlsSettings(cert=issued.cert, key=issued.key, ca=ca.ca_file, verify=False)
    contexts = TlsContexts(settings, listening=True)
    assert not contexts.client.check_hostname and contexts.client.verify_mode == ssl.CERT_NONE
    assert contexts.server is not None
    assert contexts.server.minimum_version == ssl.TLSVersion.TLSv1_2


def test_listening_without_a_certificate_or_with_a_bad_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TlsSettingsError, match="--tls-cert"):
        TlsContexts(TlsSettings(), listening=True)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(TlsSettingsError, match="cannot load --tls-cert"):
        TlsContexts(TlsSettings(cert=bad, key=bad), listening=True)
    with pytest.raises(TlsSettingsError, match="cannot load --tls-ca"):
        TlsContexts(TlsSettings(ca=bad), listening=False)
