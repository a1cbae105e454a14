"""Benchmarks, run as scripts (`python3 bench/vs_kamailio.py`); the proxy imports none."""
