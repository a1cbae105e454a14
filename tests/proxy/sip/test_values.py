"""The core's value classes keep what `@dataclass(frozen=True, slots=True)` gave them, now that
they write their own `__init__` (so that mypyc compiles it): keyword construction and defaults,
field equality and hash, immutability, a repr naming every field, `__match_args__`, no
`__dict__`. Run on both builds (the compiled one and CALLERID_PROXY_PURE=1)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Callable
from types import MappingProxyType

import pytest

from proxy.sip.addresses import Outgoing, Source, Target
from proxy.sip.caller_id import ShownIdentity
from proxy.sip.events import (
    Answered,
    CallerIdDecided,
    Dropped,
    FailedOver,
    Forwarded,
    Refused,
    ResponseRelayed,
    Shed,
    TimedOut,
    TrunkProbed,
    TrunkStateChanged,
)
from proxy.sip.framing import Frame
from proxy.sip.identity import DialogIdentity
from proxy.sip.message import split_message
from proxy.sip.policy import CallerIdDecision, TrunkIdentity
from proxy.sip.requests import OurRoute
from proxy.sip.responses import ResponseBase
from proxy.sip.transactions import (
    ClientTransaction,
    ForwardPlan,
    Restore,
    ServerTransaction,
    State,
)
from proxy.sip.untrusted import Glance
from proxy.sip.values import FrozenValue

TRUNK = Target("udp", "192.0.2.9", 5060)
PBX = Source("udp", "192.0.2.1", 5070)
WIRE = split_message(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n")
SHOWN = ShownIdentity("+442071234567", "Sales")

# One example of each class, as keyword arguments (every field named), and a field to change.
EXAMPLES: list[tuple[type[FrozenValue], dict[str, object], str, object]] = [
    (Target, {"transport": "tls", "host": "192.0.2.9", "port": 5061, "name": "t.example"},
     "port", 5062),
    (Source, {"transport": "tcp", "host": "192.0.2.1", "port": 5070, "connection": 7,
              "dialled": TRUNK}, "connection", 8),
    (Outgoing, {"data": b"x", "target": TRUNK, "connection": None, "close_after": True},
     "data", b"y"),
    (CallerIdDecided, {"call_id": "c", "user": "1001", "destination": "0044", "number": "+44",
                       "name": None, "reason": "r", "rules_version": "v1", "trunk": TRUNK,
                       "step": "step 1", "privacy": True}, "number", "+33"),
    (Refused, {"status": 403, "reason": "no", "source": PBX, "method": "INVITE"}, "status", 404),
    (Dropped, {"reason": "scanner", "source": None, "detail": "sipvicious"}, "detail", ""),
    (Forwarded, {"method": "INVITE", "destination": TRUNK, "side": "trunk"}, "side", "pbx"),
    (FailedOver, {"method": "INVITE", "from_hop": TRUNK, "to_hop": TRUNK, "status": None,
                  "cause": "timeout"}, "status", 503),
    (TimedOut, {"method": "INVITE", "destination": TRUNK, "timer": "B", "status": 408},
     "timer", "C"),
    (Answered, {"method": "INVITE", "destination": TRUNK, "status": 503, "cause": "c"},
     "cause", "d"),
    (Shed, {"source": PBX, "cause": "loop lag", "retry_after": 5}, "retry_after", 6),
    (ResponseRelayed, {"method": "INVITE", "status": 180, "hop": TRUNK, "since_request": 0.5,
                       "first": True}, "since_request", 0.25),
    (TrunkProbed, {"trunk": TRUNK, "status": None}, "status", 200),
    (TrunkStateChanged, {"trunk": TRUNK, "up": False}, "up", True),
    (Frame, {"data": b"x", "fatal": True, "reason": "bad", "status": 513}, "status", 400),
    (DialogIdentity, {"original_from": b"<sip:1001@pbx>", "rewritten_from": b"<sip:+44@t>"},
     "rewritten_from", b"<sip:+33@t>"),
    (ShownIdentity, {"number": "+44", "name": "A", "privacy": True,
                     "trunks": MappingProxyType({1: TrunkIdentity("0044")}),
                     "other_trunks": None}, "name", None),
    (TrunkIdentity, {"user": "+44", "host": "realm", "keep_pbx_host": True}, "host", None),
    (CallerIdDecision, {"number": "+44", "name": None, "reason": "r", "rules_version": "v",
                        "step": "emergency", "privacy": False, "user": "1001",
                        "trunks": MappingProxyType({}), "other_trunks": TrunkIdentity("44")},
     "user", "1002"),
    (OurRoute, {"edits": [], "identity": None, "trunk_index": 1, "known": True,
                "next_route": "sip:10.0.0.9;lr"}, "trunk_index", 0),
    (ResponseBase, {"via_from": b"v", "to_value": b"t", "has_to": True, "call_id_cseq": b"c",
                    "tag_seed": (b"c", b"f")}, "tag_seed", None),
    (Restore, {"header": "from", "value": b"<sip:1001@pbx>"}, "header", "to"),
    (ForwardPlan, {"side": "pbx", "shown": SHOWN, "extra_edits": (), "restore": None,
                   "in_dialog": False, "inbound_trunk": 0}, "in_dialog", True),
    (Glance, {"method": "OPTIONS", "fields": {b"user-agent": b"x"}, "clean": False},
     "clean", True),
]
IDS = [example[0].__name__ for example in EXAMPLES]


def _hashable(kwargs: dict[str, object]) -> bool:
    try:
        hash(tuple(kwargs.values()))
    except TypeError:
        return False
    return True


@pytest.mark.parametrize(("cls", "kwargs", "changed", "other"), EXAMPLES, ids=IDS)
def test_fields_equality_hash_and_repr(
    cls: type[FrozenValue], kwargs: dict[str, object], changed: str, other: object
) -> None:
    value = cls(**kwargs)
    assert cls.__match_args__ == tuple(kwargs)  # every field, in the constructor's order
    assert {name: getattr(value, name) for name in kwargs} == kwargs
    assert value == cls(*kwargs.values())  # positional in the same order
    assert value != cls(**{**kwargs, changed: other})
    assert value != tuple(kwargs.values())  # another class never compares equal
    assert repr(value) == f"{cls.__name__}(" + ", ".join(
        f"{name}={field!r}" for name, field in kwargs.items()
    ) + ")"
    if _hashable(kwargs):
        assert hash(value) == hash(cls(**kwargs))
    else:  # as a frozen dataclass: hashing hashes the fields
        with pytest.raises(TypeError):
            hash(value)


@pytest.mark.parametrize(("cls", "kwargs", "changed", "other"), EXAMPLES, ids=IDS)
def test_frozen_and_slotted(
    cls: type[FrozenValue], kwargs: dict[str, object], changed: str, other: object
) -> None:
    value = cls(**kwargs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, changed, other)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(value, changed)
    with pytest.raises(AttributeError):
        value.unknown = 1
    assert getattr(value, changed) == kwargs[changed]
    assert not hasattr(value, "__dict__")


def _pickled(value: object) -> object:
    return pickle.loads(pickle.dumps(value))


@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy, _pickled])
@pytest.mark.parametrize(("cls", "kwargs", "changed", "other"), EXAMPLES, ids=IDS)
def test_copies_and_pickles_are_equal_values(
    cls: type[FrozenValue],
    kwargs: dict[str, object],
    changed: str,
    other: object,
    how: Callable[[object], object],
) -> None:
    """Wherever the fields themselves copy (a mappingproxy does not), so does the value."""
    fields = tuple(kwargs.values())
    try:
        how(fields)
    except TypeError:
        pytest.skip("a field of this example does not copy, as with a dataclass")
    value = cls(**kwargs)
    copied = how(value)
    assert copied == value and type(copied) is cls


def test_defaults_are_the_dataclass_defaults() -> None:
    assert Target("udp", "h", 1).name is None
    assert Source("udp", "h", 1) == Source("udp", "h", 1, None, None)
    assert Outgoing(b"x", TRUNK) == Outgoing(b"x", TRUNK, None, False)
    assert Dropped("r", None).detail == ""
    assert Frame(b"x") == Frame(b"x", False, "", 400)
    shown = ShownIdentity("+44", None)
    assert (shown.privacy, dict(shown.trunks), shown.other_trunks) == (False, {}, None)
    decision = CallerIdDecision("+44", None, "r", "v")
    assert (decision.step, decision.privacy, decision.user) == ("", False, "")
    assert (dict(decision.trunks), decision.other_trunks) == ({}, None)
    assert TrunkIdentity("+44") == TrunkIdentity("+44", None, False)


def test_a_target_is_one_address_whatever_its_name() -> None:
    named = Target("tls", "192.0.2.9", 5061, "trunk.example")
    assert named == Target("tls", "192.0.2.9", 5061)
    assert hash(named) == hash(Target("tls", "192.0.2.9", 5061))
    assert {named: 1}[Target("tls", "192.0.2.9", 5061, "other.example")] == 1
    assert named != Target("tcp", "192.0.2.9", 5061, "trunk.example")


def test_match_statements_read_the_fields_in_order() -> None:
    match Forwarded("INVITE", TRUNK, "trunk"):
        case Forwarded(method, destination, side):
            assert (method, destination, side) == ("INVITE", TRUNK, "trunk")
        case _:
            pytest.fail("Forwarded did not match its own fields")


def test_transactions_take_the_same_keywords_and_start_as_before() -> None:
    server = ServerTransaction(
        key=("z9hG4bK-1", "192.0.2.1:5070", "INVITE"), method="INVITE", source=PBX,
        request=None, started=1.5,
    )
    assert (server.state, server.reply_to, server.attempt) == (
        State.TRYING, PBX.reply_target(), 0,
    )
    assert server.alternatives == []
    assert server.alternatives is not ServerTransaction(
        key=server.key, method="INVITE", source=PBX, request=None, started=1.5
    ).alternatives  # a list of its own, as the dataclass's default_factory made
    server.state = State.PROCEEDING  # records are mutable
    assert repr(server) == (
        f"ServerTransaction(key={server.key!r}, method='INVITE', "
        f"state=<State.PROCEEDING: 'Proceeding'>, source={PBX!r})"
    )
    invite = ClientTransaction(
        branch="z9hG4bKcp1", method="INVITE", target=TRUNK, request=b"x", server_key=None
    )
    assert (invite.state, invite.key, invite.reliable) == (
        State.CALLING, ("z9hG4bKcp1", "INVITE"), False,
    )
    bye = ClientTransaction("z9hG4bKcp2", "BYE", TRUNK, b"x", None, probe=2)
    assert (bye.state, bye.probe, bye.restore) == (State.TRYING, 2, None)
    assert not hasattr(invite, "__dict__") and not hasattr(server, "__dict__")
