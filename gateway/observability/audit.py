"""The audit trail: exactly one event per request that reaches the policy engine, hash-chained.

Each event carries `seq` and `prev` (the hash of the event before it), chained from a per-start anchor
event; `hash` covers the whole event. `dcr-gateway audit verify FILE` finds the first edited, missing or
reordered event. Events are built from explicit, non-secret fields only (never headers or bodies), and
written by a background thread so the event loop never blocks on the sink.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

KIND = "dcr_gateway_audit"
"""Value of the `kind` member that marks an audit line among other log lines."""
SCHEMA_VERSION = 1
GENESIS = "0" * 64


def _canonical(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event_hash(event: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the event without its `hash` member."""
    body = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


class _Writer(threading.Thread):
    """Writes lines to the sink in order; flushes after each batch."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(name="audit-writer", daemon=True)
        self._stream = stream
        self.queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            line = self.queue.get()
            if line is None:
                break
            lines = [line]
            while True:  # batch whatever is already waiting
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write(lines)
                    return
                lines.append(more)
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        self._stream.write("".join(lines))
        self._stream.flush()


class AuditLog:
    """Chains and emits audit events; `emit` is cheap and never blocks on I/O."""

    def __init__(self, sink: str = "stdout", path: str | None = None) -> None:
        self._own_stream: IO[str] | None = None
        if sink == "file":
            if not path:
                raise ValueError("audit file sink needs a path")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Append-only: O_APPEND, never truncated by the gateway.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._own_stream = os.fdopen(fd, "a", encoding="utf-8")
            stream: IO[str] = self._own_stream
        else:
            stream = sys.stdout
        self._writer = _Writer(stream)
        self._writer.start()
        self.chain = uuid.uuid4().hex
        self._seq = 0
        self._prev = GENESIS
        self._closed = False
        self._append({"event": "audit_start", "pid": os.getpid()})

    def _append(self, fields: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        event = {"kind": KIND, "v": SCHEMA_VERSION, "chain": self.chain, "seq": self._seq, "prev": self._prev,
                 "time": _now(), **fields}
        body = _canonical(event)  # serialised once: hashed, then written with the hash appended
        digest = hashlib.sha256(body).hexdigest()
        event["hash"] = self._prev = digest
        self._writer.queue.put(body[:-1].decode("utf-8") + f',"hash":"{digest}"}}\n')
        return event

    def emit(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Append one decision event (the caller passes only non-secret fields)."""
        if self._closed:
            return {}
        return self._append({"event": "decision", **fields})

    def close(self) -> None:
        """Write everything queued, then stop the writer."""
        if self._closed:
            return
        self._append({"event": "audit_stop", "events": self._seq})
        self._closed = True
        self._writer.queue.put(None)
        self._writer.join(timeout=10)
        if self._own_stream is not None:
            self._own_stream.close()


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1_000_000):06d}Z"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of `audit verify`."""

    ok: bool
    events: int
    chains: int
    problem: str | None = None
    line: int | None = None


def _audit_lines(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | None]]:
    for number, raw in enumerate(lines, 1):
        raw = raw.strip()
        if not raw or KIND not in raw:
            continue
        try:
            event = json.loads(raw)
        except ValueError:
            yield number, None
            continue
        if isinstance(event, dict) and event.get("kind") == KIND:
            yield number, event
        elif KIND in raw:
            yield number, None


def verify_lines(lines: Iterable[str]) -> VerifyResult:
    """Check every chain in a stream of lines (other log lines are skipped)."""
    state: dict[str, tuple[int, str]] = {}  # chain -> (last seq, last hash)
    count = 0
    for number, event in _audit_lines(lines):
        if event is None:
            return VerifyResult(False, count, len(state), "unparseable audit line (edited?)", number)
        chain, seq, prev, digest = event.get("chain"), event.get("seq"), event.get("prev"), event.get("hash")
        if not isinstance(chain, str) or not isinstance(seq, int) or not isinstance(digest, str):
            return VerifyResult(False, count, len(state), "audit line without chain/seq/hash", number)
        if event_hash(event) != digest:
            return VerifyResult(False, count, len(state), f"event seq {seq} was altered (hash mismatch)", number)
        last_seq, last_hash = state.get(chain, (0, GENESIS))
        if seq <= last_seq:
            return VerifyResult(False, count, len(state),
                                f"event seq {seq} out of order (after seq {last_seq})", number)
        if seq != last_seq + 1:
            return VerifyResult(False, count, len(state),
                                f"events missing: seq {last_seq + 1}..{seq - 1} of chain {chain[:8]}", number)
        if prev != last_hash:
            return VerifyResult(False, count, len(state), f"event seq {seq} does not follow its predecessor", number)
        state[chain] = (seq, digest)
        count += 1
    return VerifyResult(True, count, len(state))


def verify_file(path: Path) -> VerifyResult:
    """Verify an audit file (or a captured log containing audit lines)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        return verify_lines(f)
