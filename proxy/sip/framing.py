"""Cut a byte stream (TCP) into SIP messages by Content-Length, RFC 3261 18.3. No I/O.

Feed whatever a read returned; get back complete messages. A header block that cannot be
framed (no or bad Content-Length) is handed out with `fatal=True`: the core answers it 400 and
the connection must then be closed, because the rest of the stream can no longer be trusted.
"""

from __future__ import annotations

import re
from typing import Final

from proxy.sip.values import FrozenValue

DEFAULT_MAX_MESSAGE: Final = 64 * 1024

_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
# Searched in the lowered header block, after a line break (the block starts with one added).
_CONTENT_LENGTH: Final = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")


class Frame(FrozenValue):
    __match_args__ = ("data", "fatal", "reason", "status")
    __slots__ = __match_args__
    data: bytes
    fatal: bool  # framing failed: answer it if possible, then close the connection
    reason: str
    status: int  # what to answer: 400, or 513 Message Too Large over the size cap

    def __init__(
        self,
        data: bytes,
        fatal: bool = False,
        reason: str = "",
        status: int = 400,
    ) -> None:
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "fatal", fatal)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "status", status)


class StreamFramer:
    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message
        self._max_digits = len(str(max_message))
        self.broken = False

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        if self.broken:
            return []
        if not self._buffer:
            whole = self._whole_message(data)
            if whole is not None:
                return [whole]
        self._buffer += data
        frames: list[Frame] = []
        while not self.broken:
            frame = self._next_frame()
            if frame is None:
                break
            frames.append(frame)
        return frames

    def _next_frame(self) -> Frame | None:
        self._skip_keepalives()
        span = _header_end(self._buffer)
        if span is None:
            if len(self._buffer) > self._max:
                head = bytes(self._buffer[: self._max])
                return self._fail(head, "header section too large", status=513)
            return None
        block_end, header_end = span
        head = bytes(self._buffer[:header_end])
        total = self._total_length(head, block_end, header_end)
        if isinstance(total, Frame):
            return total
        if len(self._buffer) < total:
            return None
        message = bytes(self._buffer[:total])
        del self._buffer[:total]
        return Frame(message)

    def _whole_message(self, data: bytes) -> Frame | None:
        """The usual read of a stream between SIP peers: one whole message and nothing else, no
        keep-alive before it, framed as `_next_frame` would, without copying it into the buffer
        and out again (issue 6). None: the general path decides (a part of a message, several,
        a keep-alive, no blank line yet)."""
        if not data or data[0] in b"\r\n":
            return None
        span = _header_end(data)
        if span is None:
            return None
        block_end, header_end = span
        total = self._total_length(data, block_end, header_end)
        if isinstance(total, Frame):
            return total
        return Frame(data) if total == len(data) else None

    def _total_length(self, head: bytes, block_end: int, header_end: int) -> int | Frame:
        """The message's length in octets from its one Content-Length (RFC 3261 18.3: required
        on a stream), or the fatal frame of a header block that cannot be framed. `head` starts
        with the header block (`header_end` octets, the blank line ending at `header_end`)."""
        lengths = _content_lengths(head, block_end)
        if len(lengths) != 1:
            problem = "missing Content-Length" if not lengths else "several Content-Length"
            return self._fail(head[:header_end], problem + " on a stream transport")
        text = lengths[0].strip()
        if not text.isdigit():
            reason = f"invalid Content-Length {text[:20].decode('latin-1')!r}"
            return self._fail(head[:header_end], reason)
        significant = text.lstrip(b"0") or b"0"
        # Length before int(): a 4,301-digit value would raise ValueError, and any value with
        # more digits than the cap is over it.
        if len(significant) > self._max_digits:
            reason = f"Content-Length of {len(text)} digits exceeds the cap"
            return self._fail(head[:header_end], reason, status=513)
        total = header_end + int(significant)
        if total > self._max:
            reason = f"message of {total} octets exceeds the {self._max} limit"
            return self._fail(head[:header_end], reason, status=513)
        return total

    def _skip_keepalives(self) -> None:
        """RFC 5626 CRLF keep-alives between messages are not messages."""
        strip = 0
        while strip < len(self._buffer) and self._buffer[strip] in b"\r\n":
            strip += 1
        if strip:
            del self._buffer[:strip]

    def _fail(self, head: bytes, reason: str, *, status: int = 400) -> Frame:
        self.broken = True
        self._buffer.clear()
        return Frame(head, fatal=True, reason=reason, status=status)


def _header_end(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """Where the blank line after the headers starts and ends. The usual CRLF block is found
    with one `find`: any other end (a bare LF) has a bare LF before it, and then the regex
    tells which comes first."""
    end = buffer.find(b"\r\n\r\n")
    if end >= 0 and buffer.count(b"\n", 0, end) == buffer.count(b"\r\n", 0, end):
        return end, end + 4
    found = _HEADER_END.search(buffer)
    return None if found is None else found.span()


def _content_lengths(head: bytes, block_end: int) -> list[bytes]:
    """The values of every Content-Length (or `l`) line of the header block, as sent."""
    block = b"\n" + head[:block_end]
    return [block[m.start(1) : m.end(1)] for m in _CONTENT_LENGTH.finditer(block.lower())]
