"""The core's memo of parsed header values answers exactly as the grammar does, anywhere in any
message, keeps nothing the grammar refuses, and stays within its bound."""

from __future__ import annotations

import gc
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sip.errors import SipError
from proxy.sip.grammar import NameAddr, Via, parse_name_addr, parse_via_value
from proxy.sip.message import split_message
from proxy.sip.parse import parse_message
from proxy.sip.value_memo import LONGEST_KEPT, ValueMemo
from tests.proxy.sip.support import invite
from tests.proxy.sip.torture_support import NAMES, load

_ADDRESS_HEADERS = ("from", "to", "contact", "route", "record-route")


def _values(names: tuple[str, ...]) -> list[str]:
    """Every value of those headers in the torture messages and a usual INVITE."""
    found: list[str] = []
    for data in [load(name) for name in NAMES] + [invite()]:
        try:
            wire = split_message(data)
        except SipError:
            continue
        for name in names:
            found.extend(header.value for header in wire.get_all(name))
    return found


ADDRESS_VALUES = _values(_ADDRESS_HEADERS)
VIA_VALUES = _values(("via",))
# Values near the usual ones: what a fuzzer around them would try (display names, quoting,
# params, blanks, brackets).
_PIECES = st.sampled_from(
    ['"Alice"', "Bob", " ", "\t", "<", ">", "sip:", "1001", "@", "pbx.example.com", ":5060",
     ";tag=", "abc", ";lr", '"', "\\", ",", "=", "SIP/2.0/UDP ", "10.0.0.1", ";branch=z9hG4bK",
     ";rport", "[::1]", "\r\n "]
)  # fmt: skip
NEAR_VALUES = st.lists(_PIECES, min_size=1, max_size=10).map("".join)
OFFSETS = st.integers(0, 2000)


def _outcome(parse: object, *args: object) -> object:
    try:
        return parse(*args)  # type: ignore[operator]
    except SipError as error:
        return (type(error), error.status_code)


def _same_as_the_grammar_name_addr(memo: ValueMemo, value: str, offset: int) -> None:
    expected = _outcome(parse_name_addr, value, offset)
    for _ in range(2):  # a miss, then a hit (or a refusal again)
        assert _outcome(memo.name_addr, value, offset) == expected


def _same_as_the_grammar_via(memo: ValueMemo, value: str, offset: int, index: int) -> None:
    expected = _outcome(parse_via_value, value, offset, index)
    for _ in range(2):
        assert _outcome(memo.via, value, offset, index) == expected


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.sampled_from(ADDRESS_VALUES), NEAR_VALUES), offset=OFFSETS)
def test_a_name_addr_from_the_memo_is_the_grammars(value: str, offset: int) -> None:
    memo = ValueMemo()
    _same_as_the_grammar_name_addr(memo, value, 0)
    _same_as_the_grammar_name_addr(memo, value, offset)  # kept at 0, moved to `offset`


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.sampled_from(VIA_VALUES), NEAR_VALUES),
    offset=OFFSETS,
    index=st.integers(0, 30),
)
def test_a_via_from_the_memo_is_the_grammars(value: str, offset: int, index: int) -> None:
    memo = ValueMemo()
    _same_as_the_grammar_via(memo, value, offset, index)
    _same_as_the_grammar_via(memo, value, 0, 0)


def test_the_corpus_values_all_agree_in_one_memo() -> None:
    memo = ValueMemo()
    for offset, value in enumerate(ADDRESS_VALUES):
        _same_as_the_grammar_name_addr(memo, value, offset * 7)
    for offset, value in enumerate(VIA_VALUES):
        _same_as_the_grammar_via(memo, value, offset * 5, offset % 4)
    assert len(memo) > 0


def test_a_hit_moves_only_the_spans_and_is_a_parse_of_its_own() -> None:
    memo = ValueMemo()
    value = '"Alice" <sip:1001@pbx.example.com>;tag=abc'
    first, second = memo.name_addr(value, 10), memo.name_addr(value, 300)
    assert len(memo) == 1 and isinstance(second, NameAddr)
    assert [second.start, second.uri_start, second.params_start] == [
        first.start + 290, first.uri_start + 290, first.params_start + 290
    ]  # fmt: skip
    assert second.params == first.params and second.params is not first.params
    via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport"
    top, lower = memo.via(via, 40, 0), memo.via(via, 400, 3)
    assert len(memo) == 2 and isinstance(lower, Via)
    assert (lower.header_index, lower.start, lower.params_end) == (3, 400, top.params_end + 360)
    assert lower.params == top.params and lower.params is not top.params


def test_what_the_memo_keeps_is_invisible_to_the_cyclic_gc() -> None:
    """Kept values are tuples of atoms: the first collection untracks them, so a full memo adds
    nothing to the collections (a tuple holding a dict would stay tracked forever)."""
    memo = ValueMemo()
    for n in range(100):
        memo.name_addr(f'"User {n}" <sip:{n}@pbx.example.com;transport=udp>;tag=t{n}', n)
        memo.via(f"SIP/2.0/UDP 10.0.0.{n}:5060;rport;branch=z9hG4bK{n}", n, 0)
    gc.collect()
    kept = [*memo._name_addrs.values(), *memo._vias.values()]
    assert len(kept) == 200
    assert not any(gc.is_tracked(entry) for entry in kept)


@pytest.mark.parametrize(
    ("value", "kind"),
    [("<sip:a@b", "name_addr"), ("sip:a@b;tag=x y", "name_addr"), ("SIP/2.0/UDP", "via")],
)
def test_a_refused_value_is_never_kept(value: str, kind: str) -> None:
    memo = ValueMemo()
    for _ in range(2):
        with pytest.raises(SipError):
            if kind == "via":
                memo.via(value, 0, 0)
            else:
                memo.name_addr(value, 0)
    assert len(memo) == 0


def test_the_memo_is_bounded() -> None:
    memo = ValueMemo(limit=4)
    for n in range(50):
        memo.name_addr(f"<sip:{n}@example.com>", 0)
        memo.via(f"SIP/2.0/UDP 10.0.0.{n};branch=z9hG4bK{n}", 0, 0)
        assert len(memo) <= 2 * 4
    # emptied when full, never wrong: the first value parses again to the same answer
    assert memo.name_addr("<sip:0@example.com>", 5) == parse_name_addr("<sip:0@example.com>", 5)


def test_a_long_value_is_parsed_every_time_and_never_kept() -> None:
    memo = ValueMemo()
    name_addr = f'"{"x" * LONGEST_KEPT}" <sip:1001@pbx.example.com>;tag=1'
    via = f"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{'y' * LONGEST_KEPT}"
    for offset in (0, 33):
        assert memo.name_addr(name_addr, offset) == parse_name_addr(name_addr, offset)
        assert memo.via(via, offset, 2) == parse_via_value(via, offset, 2)
    assert len(memo) == 0


@pytest.mark.parametrize("name", NAMES)
def test_parsing_through_a_memo_changes_no_answer(name: str) -> None:
    """Each torture message, parsed twice through one memo (the second time from it), gives the
    parse or the refusal it gives without one."""
    memo = ValueMemo()
    data = load(name)
    for datagram in (True, False):
        expected = _outcome(partial(parse_message, data, datagram=datagram))
        for _ in range(2):
            got = _outcome(partial(parse_message, data, datagram=datagram, memo=memo))
            assert got == expected
