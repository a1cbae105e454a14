"""The signed (and encrypted) dialog identity carried in our Record-Route `cid` parameter."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.sip.errors import BadRequest
from proxy.sip.identity import DialogIdentity, IdentitySeal, decode_identity, encode_identity

SECRET = b"identity-test-secret"
CALL_ID = "a84b4c76e66710@pc33.example.com"
IDENTITY = DialogIdentity(
    original_from=b'"Alice \\"A\\"" <sip:1001@pbx.example.com>;tag=pbx-tag-1;x=\xe9',
    rewritten_from=b'"+3228880001" <sip:+3228880001@192.0.2.10>;tag=pbx-tag-1;x=\xe9',
)
# What a SIP URI parameter value may hold without escaping (RFC 3261 25.1 paramchar, minus '%').
URI_PARAM_SAFE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+")
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

from_values = st.binary(max_size=300).filter(lambda b: b"\x00" not in b)
call_ids = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64
)


def test_round_trip() -> None:
    token = encode_identity(SECRET, CALL_ID, IDENTITY)
    assert decode_identity(SECRET, CALL_ID, token) == IDENTITY


def test_token_is_safe_as_a_uri_parameter_value() -> None:
    token = encode_identity(SECRET, CALL_ID, IDENTITY)
    assert URI_PARAM_SAFE.fullmatch(token)
    assert token.count(".") == 1


def test_token_is_deterministic_so_a_second_instance_makes_the_same() -> None:
    assert encode_identity(SECRET, CALL_ID, IDENTITY) == encode_identity(SECRET, CALL_ID, IDENTITY)


def test_token_does_not_reveal_the_pbx_extension_or_name() -> None:
    identity = DialogIdentity(b'"Alice Smith" <sip:1001@pbx>;tag=t', b'"+32" <sip:+32@h>;tag=t')
    token = encode_identity(SECRET, CALL_ID, identity)
    body = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert b"Alice" not in decoded and b"1001" not in decoded


@given(from_values, from_values, call_ids, st.binary(min_size=1, max_size=64))
def test_round_trip_of_anything(original: bytes, rewritten: bytes, call_id: str,
                                secret: bytes) -> None:
    identity = DialogIdentity(original, rewritten)
    token = encode_identity(secret, call_id, identity)
    assert URI_PARAM_SAFE.fullmatch(token)
    assert decode_identity(secret, call_id, token) == identity


def test_another_call_id_is_refused() -> None:
    token = encode_identity(SECRET, CALL_ID, IDENTITY)
    with pytest.raises(BadRequest):
        decode_identity(SECRET, CALL_ID + "x", token)


def test_another_secret_is_refused() -> None:
    token = encode_identity(SECRET, CALL_ID, IDENTITY)
    with pytest.raises(BadRequest):
        decode_identity(b"another-secret", CALL_ID, token)


def one_changed(token: str, index: int) -> str:
    char = token[index]
    replacement = "A" if char == "." else BASE64URL[(BASE64URL.index(char) + 1) % 64]
    return token[:index] + replacement + token[index + 1 :]


def test_every_one_character_change_is_refused() -> None:
    token = encode_identity(SECRET, CALL_ID, IDENTITY)
    for index in range(len(token)):
        with pytest.raises(BadRequest):
            decode_identity(SECRET, CALL_ID, one_changed(token, index))


@given(st.data())
def test_any_single_substitution_is_refused(data: st.DataObject) -> None:
    token = encode_identity(SECRET, CALL_ID, IDENTITY)
    index = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.characters(min_codepoint=33, max_codepoint=126))
    tampered = token[:index] + char + token[index + 1 :]
    if tampered == token:
        return
    with pytest.raises(BadRequest):
        decode_identity(SECRET, CALL_ID, tampered)


def test_swapping_the_two_halves_of_the_identity_is_refused() -> None:
    swapped = DialogIdentity(IDENTITY.rewritten_from, IDENTITY.original_from)
    token_of_swapped = encode_identity(SECRET, CALL_ID, swapped)
    assert decode_identity(SECRET, CALL_ID, token_of_swapped) == swapped  # only with the secret
    token = encode_identity(SECRET, CALL_ID, IDENTITY)
    body, iv = token.split(".")
    other_body, other_iv = token_of_swapped.split(".")
    for mixed in (f"{body}.{other_iv}", f"{other_body}.{iv}"):
        with pytest.raises(BadRequest):
            decode_identity(SECRET, CALL_ID, mixed)


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "abc.", ".abc", "a.b.c", "!!!!.AAAA", "A" * 40, "AAAA.AAAAAAAAAAAAAAAAAAAAAA",
     "====.====", "AA AA.AAAA"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(BadRequest):
        decode_identity(SECRET, CALL_ID, token)


@pytest.mark.parametrize("where", [0, 3, -1])
def test_stray_characters_inserted_are_refused(where: int) -> None:
    token = encode_identity(SECRET, CALL_ID, IDENTITY)
    position = where % (len(token) + 1)
    with pytest.raises(BadRequest):
        decode_identity(SECRET, CALL_ID, token[:position] + "!!!!" + token[position:])


# A token of the previous construction (HMAC-SHA256 keystream, 16-byte IV), made by the version
# before the fast path: a dialog set up before an upgrade still restores after it.
LEGACY_IDENTITY = DialogIdentity(
    b'"Alice" <sip:1001@pbx.example.com>;tag=pbx-tag-1',
    b'"+3228880001" <sip:+3228880001@192.0.2.10>;tag=pbx-tag-1',
)
LEGACY_TOKEN = (
    "Zs6TerqASO87307El9Olqzorcw5JLLJtJ3Y0hFVAsjb3EAWIqxbn169lNEyCy6FSmMAXN5n93LelEZWxkcnYkkF74k"
    "FwYaus1FDT65JIAXRX7RoOROUWFyhtKOctyMzVFBbZocfqn-cS.6bIS0TCMywG_xA7DioMFew"
)


def test_a_token_of_the_previous_construction_is_still_read() -> None:
    assert decode_identity(SECRET, CALL_ID, LEGACY_TOKEN) == LEGACY_IDENTITY


def test_new_tokens_are_the_current_construction_not_the_previous_one() -> None:
    token = encode_identity(SECRET, CALL_ID, LEGACY_IDENTITY)
    assert token != LEGACY_TOKEN
    assert len(token.split(".")[1]) == 24 and len(LEGACY_TOKEN.split(".")[1]) == 22


def test_every_one_character_change_of_a_previous_token_is_refused() -> None:
    for index in range(len(LEGACY_TOKEN)):
        with pytest.raises(BadRequest):
            decode_identity(SECRET, CALL_ID, one_changed(LEGACY_TOKEN, index))


def test_a_previous_token_is_bound_to_its_call_id_and_secret() -> None:
    with pytest.raises(BadRequest):
        decode_identity(SECRET, CALL_ID + "x", LEGACY_TOKEN)
    with pytest.raises(BadRequest):
        decode_identity(b"another-secret", CALL_ID, LEGACY_TOKEN)


def test_the_seal_held_by_the_config_makes_the_tokens_of_the_functions() -> None:
    seal = IdentitySeal(SECRET)
    token = seal.seal(CALL_ID, IDENTITY)
    assert token == encode_identity(SECRET, CALL_ID, IDENTITY)
    assert seal.unseal(CALL_ID, token) == IDENTITY


def _raw(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _text(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@given(from_values, from_values, call_ids, st.data())
def test_any_single_bit_flip_of_the_sealed_bytes_is_refused(
    original: bytes, rewritten: bytes, call_id: str, data: st.DataObject
) -> None:
    """Flip one bit of the ciphertext or of the IV, re-encoded canonically (so that only the
    cryptography can tell): the token is refused."""
    seal = IdentitySeal(SECRET)
    identity = DialogIdentity(original, rewritten)
    body, iv = (_raw(part) for part in seal.seal(call_id, identity).split("."))
    assert seal.unseal(call_id, f"{_text(body)}.{_text(iv)}") == identity
    sealed = bytearray(body + iv)
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    tampered = f"{_text(bytes(sealed[: len(body)]))}.{_text(bytes(sealed[len(body) :]))}"
    with pytest.raises(BadRequest):
        seal.unseal(call_id, tampered)


@given(from_values, from_values, call_ids, st.binary(min_size=1, max_size=64))
def test_a_forged_token_of_the_right_shape_is_refused(
    original: bytes, rewritten: bytes, call_id: str, random_iv: bytes
) -> None:
    """Without the secret: any ciphertext with any IV of either construction's length."""
    body = _text(original + b"\x00" + rewritten)
    for length in (16, 18):
        iv = (random_iv * length)[:length]
        with pytest.raises(BadRequest):
            decode_identity(SECRET, call_id, f"{body}.{_text(iv)}")


def _same_bytes_spellings(part: str) -> list[str]:
    """Other spellings a lenient base64 decoder reads as the same bytes."""
    spellings = [part + "=" * (-len(part) % 4), part.replace("-", "+").replace("_", "/")]
    if len(part) % 4 in (2, 3):  # unused low bits of the last character set
        index = BASE64URL.index(part[-1])
        spellings.append(part[:-1] + BASE64URL[index | 1])
    return [spelling for spelling in spellings if spelling != part]


@given(from_values, from_values, call_ids)
def test_no_other_spelling_of_the_same_bytes_is_accepted(
    original: bytes, rewritten: bytes, call_id: str
) -> None:
    token = encode_identity(SECRET, call_id, DialogIdentity(original, rewritten))
    body, iv = token.split(".")
    for other in _same_bytes_spellings(body):
        assert _raw(other.replace("+", "-").replace("/", "_")) == _raw(body)
        with pytest.raises(BadRequest):
            decode_identity(SECRET, call_id, f"{other}.{iv}")
    for other in _same_bytes_spellings(iv):
        with pytest.raises(BadRequest):
            decode_identity(SECRET, call_id, f"{body}.{other}")
