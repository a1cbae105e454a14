"""A DNS server on a loopback UDP port that a test controls: records set and changed at will,
SERVFAIL on demand. Built with dnspython's message API; never touches the network."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = dict[tuple[str, str], tuple[int, list[str]]]  # (name, type) -> (ttl, rdata texts)


class LoopbackDns:
    """Answers from `records`; `failing` answers SERVFAIL to everything. `queries` logs each
    (name, type) asked, in order."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.records: Records = {}
        self.failing = False
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((host, 0))
        self._socket.settimeout(0.05)
        self.address: tuple[str, int] = self._socket.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def option(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def set(self, name: str, rdtype: str, ttl: int, values: list[str]) -> None:
        with self._lock:
            self.records[(name.lower().rstrip("."), rdtype)] = (ttl, values)

    def asked(self, name: str, rdtype: str) -> int:
        with self._lock:
            return self.queries.count((name, rdtype))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            self._socket.sendto(self._answer(query).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name, rdtype))
            found = self.records.get((name, rdtype))
            known = any(key[0] == name for key in self.records)
            failing = self.failing
        if failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif found is not None:
            ttl, values = found
            response.answer.append(dns.rrset.from_text_list(
                question.name, ttl, dns.rdataclass.IN, question.rdtype, values
            ))
        elif not known:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response  # a known name without that type: NOERROR, no answer (NODATA)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close()


@contextmanager
def loopback_dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns()
    server.start()
    try:
        yield server
    finally:
        server.stop()
