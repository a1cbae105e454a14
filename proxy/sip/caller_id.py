"""The caller-ID rewrite of an outbound call and its restore, as edits on the original bytes.

What the trunk sees: From, P-Asserted-Identity and Remote-Party-ID carry the chosen company number;
P-Preferred-Identity (the PBX's own wish) is gone. What the PBX sees: always its own From back.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.sip.edits import Edit, remove_header, replace_span, replace_value
from proxy.sip.grammar import parse_name_addr, split_comma_values
from proxy.sip.identity import DialogIdentity
from proxy.sip.parse import Message


@dataclass(frozen=True, slots=True)
class ShownIdentity:
    number: str  # E.164, validated by the rules engine (no CR/LF/<>";)
    name: str | None

    def name_addr(self, host: str) -> bytes:
        display = (self.name or self.number).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{display}" <sip:{self.number}@{host}>'.encode()


def rewrite_caller_id(
    msg: Message, shown: ShownIdentity, host: str
) -> tuple[list[Edit], DialogIdentity]:
    """Edits that make the trunk see `shown`, and the identity pair to carry in the Record-Route."""
    wire = msg.wire
    from_header = wire.one("from")
    original = wire.raw[from_header.value_start : from_header.value_end]
    params = wire.raw[msg.from_addr.params_start : from_header.value_end]
    rewritten = shown.name_addr(host) + params
    edits = [replace_value(from_header, rewritten)]
    for header in wire.get_all("p-asserted-identity") + wire.get_all("p-preferred-identity"):
        edits.append(remove_header(header))
    pai_line = b"P-Asserted-Identity: " + shown.name_addr(host) + b"\r\n"
    edits.append(Edit(from_header.end, from_header.end, pai_line))
    edits.extend(_rewrite_remote_party_id(msg, shown, host))
    return edits, DialogIdentity(original_from=original, rewritten_from=rewritten)


def _rewrite_remote_party_id(msg: Message, shown: ShownIdentity, host: str) -> list[Edit]:
    """Remote-Party-ID (draft-ietf-sip-privacy) still used by many PBXes: replace the calling
    party's address, keep its parameters (privacy, screen...)."""
    edits: list[Edit] = []
    for header in msg.wire.get_all("remote-party-id"):
        for start, end in split_comma_values(header.value):
            value = parse_name_addr(header.value[start:end], header.value_start + start)
            if value.params.get("party", "calling") == "calling":
                edits.append(replace_span(value.start, value.params_start, shown.name_addr(host)))
    return edits


def replace_identity_header(msg: Message, name: str, value: bytes) -> list[Edit]:
    """Put back (or put again) a whole From or To value, tag included."""
    header = msg.wire.one(name)
    if msg.raw[header.value_start : header.value_end] == value:
        return []
    return [replace_value(header, value)]
