"""Loopback fake upstreams for tests and benchmarks (``server`` is the generic engine)."""
