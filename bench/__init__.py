"""`make bench`: the gateway measured against a bare aiohttp proxy, direct upstream and nginx, in one run.

Every server listens on 127.0.0.1 only; every child process is killed when the run ends.
See docs/benchmarks.md.
"""
