"""Hot reload: a changed policy directory is validated as a whole and swapped in atomically, or rejected."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..checks.services import Services
from ..observability.logging import get_logger
from ..observability.metrics import Metrics
from .engine import PolicySet
from .loader import PolicyError, compile_policies, read_source

log = get_logger("policy_reload")


class PolicyHolder:
    """The one reference request handlers read; a reload replaces it in a single assignment."""

    __slots__ = ("current",)

    def __init__(self, initial: PolicySet) -> None:
        self.current = initial


class PolicyReloader:
    """Polls the policy directory (ConfigMap symlink swaps included) and reloads on change or on demand."""

    def __init__(
        self,
        directory: Path,
        services: Services,
        holder: PolicyHolder,
        metrics: Metrics,
        *,
        unmatched_status: int,
        interval: float,
    ) -> None:
        self._directory = directory
        self._services = services
        self._holder = holder
        self._metrics = metrics
        self._unmatched = unmatched_status
        self._interval = interval
        self._lock = asyncio.Lock()
        self._last_failed: str | None = None
        self.last_error: list[str] = []

    async def reload(self, *, force: bool = False) -> bool:
        """Load the directory; swap when valid and changed (or forced). Returns True when swapped."""
        async with self._lock:
            try:
                source = await asyncio.to_thread(read_source, self._directory)
            except PolicyError as exc:
                return self._failed(exc.messages, None)
            if not force and source.version in (self._holder.current.version, self._last_failed):
                return False
            try:
                new = compile_policies(source, self._services, unmatched_status=self._unmatched)
            except PolicyError as exc:
                return self._failed(exc.messages, source.version)
            old = self._holder.current.version
            self._holder.current = new
            self._last_failed = None
            self.last_error = []
            self._metrics.policy_reloads.labels("success").inc()
            self._metrics.set_policy_version(new.version, len(new.policies))
            log.info("policy_reloaded", old_version=old, version=new.version, policies=len(new.policies))
            return True

    def _failed(self, messages: list[str], version: str | None) -> bool:
        if version is None and messages == self.last_error:
            return False  # the same unreadable directory: counted and logged once
        self._last_failed = version
        self.last_error = messages
        self._metrics.policy_reloads.labels("failure").inc()
        # The last good set keeps serving; readiness is unaffected.
        log.error("policy_reload_rejected", errors=messages[:20], kept_version=self._holder.current.version)
        return False

    async def run(self) -> None:
        """Poll forever (cancel to stop)."""
        if self._interval <= 0:
            return
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.reload()
            except Exception:  # a reload must never kill the poller
                log.exception("policy_reload_crashed")
