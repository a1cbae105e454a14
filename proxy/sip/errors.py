"""One exception family for all the SIP core refuses, carrying the answer to give (h11 style).

A request that raises gets a stateless response with `status_code`; a response is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.sip.message import SipMessage


class SipError(Exception):
    """Base of every SIP-level refusal. `status_code` is the response to send to a request."""

    status_code: int = 400
    default_reason: str = "Bad Request"

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        reason: str | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.reason = reason or self.default_reason
        self.extra_headers = extra_headers
        # The message as split so far, when the refusal came after the split: enough to answer.
        self.wire: SipMessage | None = None


class UnparseableMessage(SipError):
    """Not even a start line and headers could be found: nothing can be answered, only dropped."""


class BadRequest(SipError):
    status_code = 400
    default_reason = "Bad Request"


class VersionNotSupported(SipError):
    status_code = 505
    default_reason = "Version Not Supported"


class UnsupportedUriScheme(SipError):
    status_code = 416
    default_reason = "Unsupported URI Scheme"


class TooManyHops(SipError):
    status_code = 483
    default_reason = "Too Many Hops"


class Forbidden(SipError):
    status_code = 403
    default_reason = "Forbidden"


class BadExtension(SipError):
    status_code = 420
    default_reason = "Bad Extension"


class MessageTooLarge(SipError):
    status_code = 513
    default_reason = "Message Too Large"
