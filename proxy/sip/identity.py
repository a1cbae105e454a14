"""The caller's original identity, carried in our Record-Route and authenticated with an HMAC.

Stateless restore like Kamailio's uac `vsf`, but tamper-proof: the token binds the original
and the rewritten From to the Call-ID, so it cannot be forged nor pasted into another dialog.
Because the state rides in the dialog's route set, a restart or a second instance with the same
secret restores too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from proxy.sip.errors import BadRequest

_MAC_BYTES = 16
_SEPARATOR = b"\x00"


@dataclass(frozen=True, slots=True)
class DialogIdentity:
    original_from: bytes  # the From value the PBX sent (display name, URI, tag, params)
    rewritten_from: bytes  # the From value the trunk saw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, call_id: str, payload: bytes) -> bytes:
    message = call_id.encode("latin-1") + _SEPARATOR + payload
    return hmac.new(secret, message, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_identity(secret: bytes, call_id: str, identity: DialogIdentity) -> str:
    """A URI-parameter-safe token (base64url and '.') for the Record-Route."""
    payload = identity.original_from + _SEPARATOR + identity.rewritten_from
    return _b64(payload) + "." + _b64(_mac(secret, call_id, payload))


def decode_identity(secret: bytes, call_id: str, token: str) -> DialogIdentity:
    """Verify and decode a token; a forged, altered or foreign token is a 400."""
    body, dot, mac_text = token.partition(".")
    try:
        payload = _unb64(body)
        mac = _unb64(mac_text)
    except ValueError as error:
        raise BadRequest("malformed caller-identity token in Route") from error
    if not dot or not hmac.compare_digest(mac, _mac(secret, call_id, payload)):
        raise BadRequest("caller-identity token in Route failed authentication")
    original, separator, rewritten = payload.partition(_SEPARATOR)
    if not separator:
        raise BadRequest("malformed caller-identity token in Route")
    return DialogIdentity(original_from=original, rewritten_from=rewritten)
