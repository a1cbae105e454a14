"""pymalloc's statistics as text, for bench/flood_memory.py and the arena hook that
bench/arena_pins.py loads into the proxy (bench/arena_hook/sitecustomize.py). Standard library
only: the hook imports it at interpreter start, before the proxy, and must not import the
proxy's modules ahead of the measurement."""

from __future__ import annotations

import os
import sys


def mallocstats() -> str:
    """sys._debugmallocstats's text (it writes to the C stderr)."""
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(write)
        os.close(saved)
    with open(read, "rb") as pipe:
        return pipe.read().decode()
