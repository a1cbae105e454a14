"""The stream framer (RFC 3261 18.3): messages cut by Content-Length, whatever the reads are."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sip.addresses import Source
from proxy.sip.framing import DEFAULT_MAX_MESSAGE, Frame, StreamFramer
from tests.proxy.sip.support import invite, make_core
from tests.proxy.sip.torture_support import load


def options(n: int, body: bytes = b"", *, length: str | None = None) -> bytes:
    head = (
        f"OPTIONS sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-{n}\r\n"
        f"From: <sip:a@example.com>;tag={n}\r\nTo: <sip:bob@example.com>\r\n"
        f"Call-ID: frame-{n}\r\nCSeq: {n} OPTIONS\r\n"
    ).encode()
    length_line = b"" if length == "" else f"Content-Length: {length or len(body)}\r\n".encode()
    return head + length_line + b"\r\n" + body


MESSAGES = [options(1), invite(), options(2, b"some body\r\n"), load("wsinv"), load("longreq")]


def feed_in_chunks(data: bytes, sizes: list[int]) -> list[Frame]:
    framer = StreamFramer()
    frames: list[Frame] = []
    position = 0
    for size in sizes:
        frames += framer.feed(data[position : position + size])
        position += size
    frames += framer.feed(data[position:])
    return frames


@pytest.mark.parametrize("index", range(len(MESSAGES)))
def test_one_byte_per_read(index: int) -> None:
    data = MESSAGES[index]
    framer = StreamFramer()
    frames: list[Frame] = []
    for position in range(len(data)):
        assert frames == []  # nothing before the last octet of the body
        frames += framer.feed(data[position : position + 1])
    assert frames == [Frame(data)]
    assert framer.pending == 0


def test_several_messages_in_one_read() -> None:
    stream = b"".join(MESSAGES)
    assert StreamFramer().feed(stream) == [Frame(data) for data in MESSAGES]


@pytest.mark.parametrize("seed", range(20))
def test_random_split_points_give_the_same_messages(seed: int) -> None:
    stream = b"".join(MESSAGES) * 2
    rng = random.Random(seed)
    sizes = [rng.randint(1, 400) for _ in range(len(stream) // 50)]
    frames = feed_in_chunks(stream, sizes)
    assert [frame.data for frame in frames] == MESSAGES * 2
    assert not any(frame.fatal for frame in frames)


def test_a_message_split_inside_the_header_terminator() -> None:
    data = options(3, b"xy")
    cut = data.index(b"\r\n\r\n") + 1
    for sizes in ([cut], [cut + 1], [cut + 2], [cut + 3]):
        assert feed_in_chunks(data, sizes) == [Frame(data)]


def test_crlf_keepalives_between_messages_are_skipped() -> None:
    """RFC 5626 4.4.1: a CRLFCRLF ping, or lone CRLFs, are not messages."""
    stream = b"\r\n\r\n" + options(1) + b"\r\n" + b"\r\n\r\n" + options(2) + b"\r\n\r\n"
    framer = StreamFramer()
    assert framer.feed(stream) == [Frame(options(1)), Frame(options(2))]
    assert framer.pending == 0
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.pending == 0 and not framer.broken


def test_body_is_taken_by_length_not_by_content() -> None:
    body = b"Content-Length: 999\r\n\r\nINVITE sip:x SIP/2.0\r\n"
    data = options(4, body)
    assert StreamFramer().feed(data + options(5)) == [Frame(data), Frame(options(5))]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (options(1, length=""), "missing Content-Length"),
        (options(1, length="-1"), "invalid Content-Length"),
        (options(1, length="abc"), "invalid Content-Length"),
        (options(1).replace(b"\r\n\r\n", b"\r\nl: 0\r\n\r\n"), "several Content-Length"),
        (load("ncl"), "invalid Content-Length '-999'"),
        (load("inv2543"), "missing Content-Length"),
        (load("mcl01"), "several Content-Length"),
    ],
    ids=["missing", "negative", "not-a-number", "twice", "ncl", "inv2543", "mcl01"],
)
def test_unframeable_is_fatal_and_the_framer_stops(data: bytes, reason: str) -> None:
    framer = StreamFramer()
    frames = framer.feed(data + options(9))
    assert len(frames) == 1
    assert frames[0].fatal and reason in frames[0].reason
    head = data[: data.index(b"\r\n\r\n") + 4]
    assert frames[0].data == head  # the header block, to answer it 400
    assert framer.broken and framer.pending == 0
    assert framer.feed(options(10)) == []  # nothing after it can be trusted


def test_compact_content_length_frames() -> None:
    data = options(6, b"abc").replace(b"Content-Length: 3", b"l:3")
    assert StreamFramer().feed(data + options(7)) == [Frame(data), Frame(options(7))]


def test_size_cap_counts_headers_and_body() -> None:
    data = options(8, b"x" * 100)
    assert StreamFramer(max_message=len(data)).feed(data) == [Frame(data)]
    framer = StreamFramer(max_message=len(data) - 1)
    head = data[: data.index(b"\r\n\r\n") + 4]
    (frame,) = framer.feed(head)  # refused from Content-Length, before the body arrives
    assert frame.fatal and "exceeds" in frame.reason
    assert framer.broken


def test_over_the_default_cap_is_fatal_before_the_body_arrives() -> None:
    head = options(9, length=str(DEFAULT_MAX_MESSAGE))
    framer = StreamFramer()
    (frame,) = framer.feed(head)
    assert frame.fatal and "exceeds the 65536 limit" in frame.reason
    assert frame.data == head
    assert frame.status == 513


def test_an_oversized_message_is_answered_513_and_the_connection_closed() -> None:
    head = options(9, length=str(DEFAULT_MAX_MESSAGE))
    (frame,) = StreamFramer().feed(head)
    core = make_core()
    source = Source("tcp", "127.0.0.1", 40000, connection=7)
    core.receive_broken_stream(frame.data, frame.reason, source, status=frame.status)
    (answer,) = core.datagrams_to_send()
    assert answer.data.startswith(b"SIP/2.0 513 Message Too Large\r\n")
    assert (answer.connection, answer.close_after) == (7, True)


def test_endless_header_section_is_fatal_at_the_cap() -> None:
    framer = StreamFramer(max_message=1000)
    assert framer.feed(b"OPTIONS sip:x SIP/2.0\r\n") == []
    frames: list[Frame] = []
    for _ in range(100):
        frames += framer.feed(b"X-Filler: " + b"a" * 20 + b"\r\n")
        if frames:
            break
    (frame,) = frames
    assert frame.fatal and frame.reason == "header section too large"
    assert len(frame.data) == 1000
    assert frame.status == 513


def test_clerr_body_shorter_than_content_length_waits() -> None:
    """RFC 4475 clerr on a stream: Content-Length 9999, fewer octets: keep waiting (the adapter
    closes on idle), never answer early, never hand out a truncated message."""
    data = load("clerr")
    framer = StreamFramer()
    assert framer.feed(data) == []
    assert framer.pending == len(data) and not framer.broken
    for _ in range(10):
        assert framer.feed(b"more body ") == []
    declared = 9999
    body_so_far = framer.pending - (data.index(b"\r\n\r\n") + 4)
    rest = b"z" * (declared - body_so_far)
    (frame,) = framer.feed(rest)
    assert frame.data.startswith(data) and len(frame.data) == data.index(b"\r\n\r\n") + 4 + declared


def test_dblreq_on_a_stream_is_two_messages_then_garbage() -> None:
    """On a stream the octets after the REGISTER are the next message: an INVITE whose body is
    longer than its Content-Length (150 of 155 octets), so what follows cannot be framed."""
    data = load("dblreq")
    first, second = data.split(b"\r\n\r\n\r\n", 1)
    invite_end = second.index(b"\r\n\r\n") + 4 + 150
    framer = StreamFramer()
    frames = framer.feed(data)
    assert frames[:2] == [Frame(first + b"\r\n\r\n"), Frame(second[:invite_end])]
    assert second[invite_end:] == b"C\r\n\r\n"
    assert len(frames) == 3 and frames[2].fatal and frames[2].data == b"C\r\n\r\n"
    assert framer.broken


# The whole-message fast path (a read that is one complete message, framed without the buffer)
# must frame exactly as the buffered path does; a CRLF keep-alive before a message sends the
# same bytes down the buffered path, so the two are compared on the same input.
_HEADER_LINES = st.sampled_from([
    b"Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-1\r\n",
    b"Content-Length: 0\r\n", b"Content-Length: 4\r\n", b"content-length:12\r\n",
    b"l: 4\r\n", b"L : 0\r\n", b"Content-Length: 0004\r\n", b"Content-Length: x\r\n",
    b"Content-Length: 99999999999\r\n", b"Content-Length:\r\n", b"Subject: l: 4\r\n",
    b"X-Content-Length: 7\r\n", b"\r\n", b"\n", b" folded\r\n",
])
_START_LINES = st.sampled_from([
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"l: 4\r\n",
    b"Content-Length: 4\r\n", b"CANCEL sip:bob@example.com SIP/2.0\n",
])
_READS = st.builds(
    lambda start, lines, body: start + b"".join(lines) + b"\r\n" + body,
    _START_LINES, st.lists(_HEADER_LINES, max_size=6), st.binary(max_size=16),
)


def _framed(framer: StreamFramer, data: bytes) -> tuple[list[Frame], int, bool]:
    frames = framer.feed(data)
    return frames, framer.pending, framer.broken


@settings(max_examples=400, deadline=None)
@given(_READS)
def test_a_whole_message_read_frames_as_the_buffered_path_does(data: bytes) -> None:
    fast = _framed(StreamFramer(max_message=4096), data)
    buffered = _framed(StreamFramer(max_message=4096), b"\r\n" + data)
    assert fast == buffered
    # and as one byte per read does (the frames; a fatal head may be cut at another read)
    framer = StreamFramer(max_message=4096)
    frames: list[Frame] = []
    for position in range(len(data)):
        frames += framer.feed(data[position : position + 1])
    if not any(frame.fatal for frame in fast[0]):
        assert frames == fast[0]


def test_a_whole_message_in_one_read_is_handed_on_without_a_copy() -> None:
    data = invite()
    (frame,) = StreamFramer().feed(data)
    assert frame.data is data
