"""One exception family for all the SIP core refuses, carrying the answer to give (h11 style).

A request that raises gets a stateless response with `status_code`; a response is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from proxy.sip.message import SipMessage


class SipError(Exception):
    """Base of every SIP-level refusal. `status_code` is the response to send to a request."""

    # Class-level defaults (ClassVar: a compiled core keeps them on the class, per subclass);
    # `status_code` and `reason` are the instance's, overridable per raise.
    default_status: ClassVar[int] = 400
    default_reason: ClassVar[str] = "Bad Request"

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
        self.status_code: int = self.default_status if status_code is None else status_code
        self.reason = reason or self.default_reason
        self.extra_headers = extra_headers
        # The message as split so far, when the refusal came after the split: enough to answer.
        self.wire: SipMessage | None = None


class UnparseableMessage(SipError):
    """Not even a start line and headers could be found: nothing can be answered, only dropped."""


class BadRequest(SipError):
    default_status = 400
    default_reason = "Bad Request"


class VersionNotSupported(SipError):
    default_status = 505
    default_reason = "Version Not Supported"


class UnsupportedUriScheme(SipError):
    default_status = 416
    default_reason = "Unsupported URI Scheme"


class TooManyHops(SipError):
    default_status = 483
    default_reason = "Too Many Hops"


class Forbidden(SipError):
    default_status = 403
    default_reason = "Forbidden"


class BadExtension(SipError):
    default_status = 420
    default_reason = "Bad Extension"


class MessageTooLarge(SipError):
    default_status = 513
    default_reason = "Message Too Large"
