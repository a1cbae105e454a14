"""The caller's original identity, carried in our Record-Route, encrypted and authenticated.

Stateless restore like Kamailio's uac `vsf`, but tamper-proof and private: the trunk sees the
token too, and must learn neither the PBX's extension nor its display name. The construction is
SIV-like with the standard library only: the synthetic IV is a keyed BLAKE2s over the Call-ID and
the plaintext (it authenticates both, binding the token to its dialog), and the plaintext is
XORed with a SHAKE256 keystream of the encryption key and that IV. Because the state rides in the
dialog's route set, a restart or a second instance with the same secret restores too.

The keys are derived from the secret once (`IdentitySeal`, held by the config), as before:
HMAC-SHA256 of the secret and a purpose. Tokens of the previous construction (HMAC-SHA256 for
both MAC and keystream, a 16-byte IV) are still read, told apart by the IV's length, so that the
dialogs of calls set up before an upgrade keep restoring; new tokens are always the current one.

A dialog with no identity to carry (an inbound call, a SUBSCRIBE) gets a mark instead: a keyed
BLAKE2s of its Call-ID (`IdentitySeal.mark`). With it, a request from the PBX that says it is in
a dialog (a To tag) shows that the dialog went through us; without a token, a mark or a memory
of it, it is a dialog we never saw: an INVITE with a made-up To tag went out with the PBX's own
From, around the rules, and now gets its caller ID decided as a new call's (proxy/sip/core.py).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from typing import Final

from proxy.sip.errors import BadRequest
from proxy.sip.values import FrozenValue

_SEPARATOR: Final = b"\x00"
_IV_BYTES: Final = 18  # 144 bits; base64url: 24 characters
_IV_CHARS: Final = 24
_LEGACY_IV_BYTES: Final = 16  # base64url: 22 characters
_LEGACY_IV_CHARS: Final = 22
_MARK_BYTES: Final = 12  # 96 bits; base64url: 16 characters
_TO_URL: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URL: Final = bytes.maketrans(b"-_", b"+/")
_PADDING: Final = (b"", b"", b"==", b"=")  # by length % 4 (1 cannot be canonical base64)
# The last character of 2 or 3 characters in the last quantum carries 2 or 4 unused bits: zero.
_CANONICAL_LAST: Final = {2: "AQgw", 3: "AEIMQUYcgkosw048"}


class DialogIdentity(FrozenValue):
    __match_args__ = ("original_from", "rewritten_from")
    __slots__ = __match_args__

    original_from: bytes  # the From value the PBX sent (display name, URI, tag, params)
    rewritten_from: bytes  # the From value the trunk saw

    def __init__(self, original_from: bytes, rewritten_from: bytes) -> None:
        object.__setattr__(self, "original_from", original_from)
        object.__setattr__(self, "rewritten_from", rewritten_from)


def _b64(data: bytes) -> str:
    encoded = binascii.b2a_base64(data, newline=False).translate(_TO_URL)
    return encoded.rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Only the canonical unpadded base64url spelling of some bytes: base64 decoding would
    accept padding, the other alphabet's `+/` and nonzero unused bits of the last character, so
    that an altered token could decode to our bytes. Strict mode refuses any other character."""
    remainder = len(text) % 4
    if remainder and text[-1] not in _CANONICAL_LAST.get(remainder, ""):
        raise BadRequest("malformed caller-identity token in Route")
    if "+" in text or "/" in text or "=" in text:
        raise BadRequest("malformed caller-identity token in Route")
    try:
        encoded = text.encode("ascii").translate(_FROM_URL) + _PADDING[remainder]
        return binascii.a2b_base64(encoded, strict_mode=True)
    except ValueError as error:  # binascii.Error and UnicodeEncodeError are ValueErrors
        raise BadRequest("malformed caller-identity token in Route") from error


def _subkey(secret: bytes, purpose: bytes) -> bytes:
    # hmac.digest: the one-shot C path, same bytes as hmac.new(...).digest()
    return hmac.digest(secret, b"callerid-proxy identity " + purpose, "sha256")


def _xor(data: bytes, stream: bytes) -> bytes:
    """`data` XOR `stream` (as long as `data`) in one big-integer operation."""
    mask = int.from_bytes(stream, "big") ^ int.from_bytes(data, "big")
    return mask.to_bytes(len(data), "big")


class IdentitySeal:
    """Seal and unseal dialog identities with the keys of one secret, derived once."""

    __slots__ = ("_enc_key", "_legacy_enc_key", "_legacy_mac_key", "_mac_key", "_mark_key")

    def __init__(self, secret: bytes) -> None:
        self._mac_key = _subkey(secret, b"siv-blake2s mac")  # 32 bytes: BLAKE2s's key size
        self._mark_key = _subkey(secret, b"dialog mark blake2s")
        self._enc_key = _subkey(secret, b"siv-shake256 enc")
        self._legacy_mac_key = _subkey(secret, b"mac")
        self._legacy_enc_key = _subkey(secret, b"enc")

    def seal(self, call_id: str, identity: DialogIdentity) -> str:
        """A URI-parameter-safe token (base64url, '.', base64url) for the Record-Route."""
        plaintext = identity.original_from + _SEPARATOR + identity.rewritten_from
        iv = self._iv(call_id, plaintext)
        return _b64(self._encrypt(iv, plaintext)) + "." + _b64(iv)

    def unseal(self, call_id: str, token: str) -> DialogIdentity:
        """Decrypt and verify a token; a forged, altered or foreign token is a 400."""
        body, dot, iv_text = token.partition(".")
        if not dot or len(iv_text) not in (_IV_CHARS, _LEGACY_IV_CHARS):
            raise BadRequest("malformed caller-identity token in Route")
        ciphertext, iv = _unb64(body), _unb64(iv_text)
        if len(iv_text) == _IV_CHARS:
            plaintext = self._encrypt(iv, ciphertext)
            expected = self._iv(call_id, plaintext)
        else:
            plaintext = self._legacy_keystream_xor(iv, ciphertext)
            expected = self._legacy_iv(call_id, plaintext)
        if not hmac.compare_digest(iv, expected):
            raise BadRequest("caller-identity token in Route failed authentication")
        original, separator, rewritten = plaintext.partition(_SEPARATOR)
        if not separator:
            raise BadRequest("malformed caller-identity token in Route")
        return DialogIdentity(original_from=original, rewritten_from=rewritten)

    def mark(self, call_id: str) -> str:
        """The Record-Route mark of a dialog without an identity token (see above)."""
        return _b64(self._mark_digest(call_id))

    def check_mark(self, call_id: str, mark: str) -> None:
        """`mark` must be this dialog's: a forged or foreign one is a 400, like a token."""
        if len(mark) != 16:
            raise BadRequest("malformed dialog mark in Route")
        if not hmac.compare_digest(_unb64(mark), self._mark_digest(call_id)):
            raise BadRequest("dialog mark in Route failed authentication")

    def _mark_digest(self, call_id: str) -> bytes:
        return hashlib.blake2s(
            call_id.encode("latin-1"), key=self._mark_key, digest_size=_MARK_BYTES
        ).digest()

    def _iv(self, call_id: str, plaintext: bytes) -> bytes:
        # The Call-ID length-prefixed, so that (Call-ID, plaintext) pairs never collide.
        dialog = call_id.encode("latin-1")
        message = len(dialog).to_bytes(4, "big") + dialog + plaintext
        return hashlib.blake2s(message, key=self._mac_key, digest_size=_IV_BYTES).digest()

    def _encrypt(self, iv: bytes, data: bytes) -> bytes:
        """XOR with SHAKE256(key || IV): an XOF gives the whole keystream in one call (a keyed
        sponge is a PRF, no length extension); the same operation decrypts."""
        if not data:
            return b""
        return _xor(data, hashlib.shake_256(self._enc_key + iv).digest(len(data)))

    # The previous construction, only read (tokens minted before an upgrade).
    def _legacy_iv(self, call_id: str, plaintext: bytes) -> bytes:
        message = call_id.encode("latin-1") + _SEPARATOR + plaintext
        return hmac.digest(self._legacy_mac_key, message, "sha256")[:_LEGACY_IV_BYTES]

    def _legacy_keystream_xor(self, iv: bytes, data: bytes) -> bytes:
        blocks = (len(data) + 31) // 32
        key = self._legacy_enc_key
        stream = b"".join(
            hmac.digest(key, iv + counter.to_bytes(4, "big"), "sha256") for counter in range(blocks)
        )
        return _xor(data, stream[: len(data)]) if data else b""


def encode_identity(secret: bytes, call_id: str, identity: DialogIdentity) -> str:
    """`IdentitySeal(secret).seal(...)`: keys derived for this one call (tests, tools)."""
    return IdentitySeal(secret).seal(call_id, identity)


def decode_identity(secret: bytes, call_id: str, token: str) -> DialogIdentity:
    """`IdentitySeal(secret).unseal(...)`: keys derived for this one call (tests, tools)."""
    return IdentitySeal(secret).unseal(call_id, token)
