"""Prometheus multiprocess mode for `serve --workers N`: each worker writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (set by the parent to a fresh directory before the workers start), and /metrics on
any worker reports the sum over all of them (prometheus-client's MultiProcessCollector)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when this process is one of several workers, else None."""
    return os.environ.get(ENV) or None


class _ProcessLocal(Collector):
    """The metric kinds multiprocess mode cannot share (Info: the same in every worker), from this process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """Only the `info` families of the worker's own registry."""
        for family in self._registry.collect():
            if family.type == "info":
                yield family


def exposition(registry: CollectorRegistry) -> bytes:
    """Prometheus text for /metrics: this process's registry, or the aggregate of every worker."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(registry)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
    merged.register(_ProcessLocal(registry))
    return generate_latest(merged)


def worker_exited(pid: int, path: str) -> None:
    """Drop a dead worker's `live*` gauge files (called by the parent, which holds the directory's path)."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
