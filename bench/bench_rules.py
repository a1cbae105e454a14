"""Benchmark: load a large rules file and time resolve per call.

    python3 bench/bench_rules.py [--users 10000] [--rules 1000] [--calls 200000]

Prints numbers only; it asserts nothing about speed, machines differ.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import rules

# Country codes with prefixes; each gets its share of the rules as +CC and 3 more digits.
COUNTRY_CODES = ("44", "33", "49", "31", "39", "34", "41", "43", "45", "46")
COMPANY_NUMBERS = [f"+32288{n:05d}" for n in range(100)]


def generate(users: int, rule_count: int) -> str:
    lines = ['country: "BE"', "numbers:"]
    lines += [f'  - "{number}"' for number in COMPANY_NUMBERS]
    lines += [f'default_outgoing_number: "{COMPANY_NUMBERS[0]}"', "users:"]
    for i in range(users):
        # Every other user has a direct line, the rest use the default.
        own = f'"{COMPANY_NUMBERS[i % len(COMPANY_NUMBERS)]}"' if i % 2 else "default"
        lines.append(f'  "{100000 + i}": {own}')
    lines += ["advanced_rules:", "  apply_to_users_with_own_number: true", "  rules:"]
    for i in range(rule_count):
        cc = COUNTRY_CODES[i % len(COUNTRY_CODES)]
        # Alternate the two spellings so both normalisation paths are exercised.
        prefix = f"00{cc}{i // len(COUNTRY_CODES):03d}" if i % 2 else f"+{cc}{i:04d}"
        lines.append(f'    - destination_prefix: "{prefix}"')
        lines.append(f'      number: "{COMPANY_NUMBERS[i % len(COMPANY_NUMBERS)]}"')
    return "\n".join(lines) + "\n"


def time_load(path: Path, repeats: int = 5) -> tuple[float, rules.Rules]:
    best = float("inf")
    loaded: rules.Rules | None = None
    for _ in range(repeats):
        started = time.perf_counter()
        loaded = rules.load(path)
        best = min(best, time.perf_counter() - started)
    assert loaded is not None
    return best, loaded


def time_resolve(loaded: rules.Rules, calls: int, users: Sequence[str], dialled: str) -> float:
    """Mean nanoseconds per resolve call for one kind of destination."""
    pairs = list(zip(itertools.islice(itertools.cycle(users), calls), itertools.repeat(dialled)))
    resolve = rules.resolve
    started = time.perf_counter_ns()
    for user, destination in pairs:
        resolve(loaded, user, destination)
    return (time.perf_counter_ns() - started) / calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=1_000)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.yaml"
        path.write_text(generate(args.users, args.rules))
        seconds, loaded = time_load(path)
        size = path.stat().st_size
    print(
        f"load: {len(loaded.users)} users, {len(loaded.rules)} rules, {size / 1024:.0f} KiB "
        f"in {seconds * 1000:.1f} ms (best of 5), {len(loaded.warnings)} warnings"
    )
    users = [*loaded.users, "unknown"]
    kinds = {
        "rule match, 00 form": "0044 0010 1234 5678",
        "rule match, tel: URI": "tel:+49-0012-1234-5678",
        "no rule, national BE": "02 123 45 67",
        "not a number (sip:)": "sip:alice@example.com",
    }
    for label, dialled in kinds.items():
        nanoseconds = time_resolve(loaded, args.calls, users, dialled)
        step = rules.resolve(loaded, users[0], dialled).reason.split(" (")[0].split(";")[0]
        print(f"resolve ({label}): {nanoseconds / 1000:.2f} us/call over {args.calls} calls")
        print(f"    {dialled!r} -> {step}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
