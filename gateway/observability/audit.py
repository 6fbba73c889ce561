"""The audit trail: exactly one event per request that reaches the policy engine, hash-chained.

Each event carries `seq` and `prev` (the hash of the event before it), chained from a per-start anchor
event; `hash` covers the whole event. `dcr-gateway audit verify FILE` finds the first edited, missing or
reordered event. Events are built from explicit, non-secret fields only (never headers or bodies), and
written by a background thread so the event loop never blocks on the sink.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..jsonutil import dumps
from .clock import utc_now

FLUSH_SECONDS = 0.1
"""Events reach the writer thread at most this long after they were chained (and at close). Each hand-over wakes
the writer, which then takes the GIL from the event loop twice: at 0.02 s that cost 3 us of CPU per request at
4 000 requests/s, at 0.1 s 1.2 us (docs/benchmarks.md); a process killed outright loses at most this much."""
KIND = "dcr_gateway_audit"
"""Value of the `kind` member that marks an audit line among other log lines."""
SCHEMA_VERSION = 1
GENESIS = "0" * 64


def _canonical(event: dict[str, Any]) -> bytes:
    # Sorted keys, no spaces, UTF-8 (the same bytes as json.dumps(sort_keys=True, separators=(",", ":"),
    # ensure_ascii=False)), at a fraction of the cost: one of these per request. An event holding client text
    # orjson refuses (a lone surrogate) is written ASCII-escaped: the same bytes again when a verifier re-reads it.
    return dumps(event, sort_keys=True)


def event_hash(event: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the event without its `hash` member."""
    body = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


OnWrite = Callable[[str, int], None]
"""`on_write(result, events)`: called from the writer thread with "written" or "failed" and an event count."""


class _Sink(Protocol):
    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...


class _AppendOnlyFile:
    """An O_APPEND file written with os.write: no user-space buffer, so a failed write is not retried later."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Append-only: O_APPEND, never truncated by the gateway.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, text: str, /) -> int:
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(self._fd, data):]
        return len(text)

    def flush(self) -> None:
        """Nothing buffered."""

    def close(self) -> None:
        os.close(self._fd)


class _Writer(threading.Thread):
    """Writes lines to the sink in order; flushes after each batch; a failed write loses that batch only."""

    def __init__(self, stream: _Sink, on_write: OnWrite | None = None) -> None:
        super().__init__(name="audit-writer", daemon=True)
        self._stream = stream
        self._on_write = on_write
        self.queue: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                break
            lines = list(batch)
            while True:  # batch whatever is already waiting
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write(lines)
                    return
                lines.extend(more)
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        try:
            self._stream.write("".join(lines))
            self._stream.flush()
        except (OSError, ValueError) as exc:
            # The sink refused (disk full, closed pipe…): keep the writer alive for the next batch, and say
            # so where operators look — the gap shows in `audit verify` and in dcr_gateway_audit_events_total.
            self._report("failed", len(lines))
            print(f"dcr-gateway: audit write failed, {len(lines)} event(s) lost: {exc}", file=sys.stderr)
            return
        self._report("written", len(lines))

    def _report(self, result: str, events: int) -> None:
        if self._on_write is None:
            return
        try:
            self._on_write(result, events)
        except Exception as exc:  # a metrics hook must never stop the audit trail
            print(f"dcr-gateway: audit on_write hook failed: {exc!r}", file=sys.stderr)


class AuditLog:
    """Chains and emits audit events; `emit` is cheap and never blocks on I/O."""

    def __init__(self, sink: str = "stdout", path: str | None = None, *, on_write: OnWrite | None = None) -> None:
        self._own_stream: _AppendOnlyFile | None = None
        if sink == "file":
            if not path:
                raise ValueError("audit file sink needs a path")
            self._own_stream = _AppendOnlyFile(path)
            stream: _Sink = self._own_stream
        else:
            stream = sys.stdout
        self._writer = _Writer(stream, on_write)
        self._writer.start()
        self.chain = uuid.uuid4().hex
        self._seq = 0
        self._prev = GENESIS
        self._closed = False
        self._pending: list[str] = []
        self._flush_scheduled = False
        self._append("audit_start", {"pid": os.getpid()})

    def _append(self, event_name: str, event: dict[str, Any]) -> dict[str, Any]:
        """Chain `event` (the caller's fields, completed here in place) and queue its line."""
        seq = self._seq = self._seq + 1
        text, micro = utc_now()
        # The chain's members win over a caller's field of the same name: no caller can bend the chain. (Item by
        # item: `event.update(kind=…, …)` builds and merges a keyword dict, twice the cost with every request.)
        event["kind"] = KIND
        event["v"] = SCHEMA_VERSION
        event["chain"] = self.chain
        event["seq"] = seq
        event["prev"] = self._prev
        event["time"] = f"{text}.{micro:06d}Z"
        event["event"] = event_name
        body = _canonical(event)  # serialised once: hashed, then written with the hash appended
        digest = hashlib.sha256(body).hexdigest()
        event["hash"] = self._prev = digest
        self._pending.append(body[:-1].decode("utf-8") + f',"hash":"{digest}"}}\n')
        if not self._flush_scheduled:
            # Hand lines to the writer thread in batches: one wake-up per batch instead of per event keeps the
            # thread from contending for the GIL with the event loop on every request.
            try:
                asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
                self._flush_scheduled = True
            except RuntimeError:  # no event loop (tools, tests): hand it over at once
                self.flush()
        return event

    def flush(self) -> None:
        """Pass the events chained so far to the writer thread."""
        self._flush_scheduled = False
        if self._pending:
            batch, self._pending = self._pending, []
            self._writer.queue.put(batch)

    def emit(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Append one decision event (the caller passes only non-secret fields). `fields` becomes the event: it is
        completed in place with the chain's members and returned (one dict per event, not three)."""
        if self._closed:
            return {}
        return self._append("decision", fields)

    def close(self) -> None:
        """Write everything queued, then stop the writer."""
        if self._closed:
            return
        self._append("audit_stop", {"events": self._seq})
        self._closed = True
        self.flush()
        self._writer.queue.put(None)
        self._writer.join(timeout=10)
        if self._own_stream is not None:
            self._own_stream.close()


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
    events = _audit_lines(lines)
    for number, event in events:
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
            later = _first_later(events, chain, range(last_seq + 1, seq))
            if later is not None:  # not missing: further down the file (swapped, or moved)
                found, found_line = later
                return VerifyResult(False, count, len(state),
                                    f"events out of order: seq {seq} of chain {chain[:8]} comes before seq "
                                    f"{found} (line {found_line})", number)
            return VerifyResult(False, count, len(state),
                                f"events missing: seq {last_seq + 1}..{seq - 1} of chain {chain[:8]}", number)
        if prev != last_hash:
            return VerifyResult(False, count, len(state), f"event seq {seq} does not follow its predecessor", number)
        state[chain] = (seq, digest)
        count += 1
    return VerifyResult(True, count, len(state))


def _first_later(events: Iterator[tuple[int, dict[str, Any] | None]], chain: str,
                 wanted: range) -> tuple[int, int] | None:
    """(seq, line) of the first event of `chain` with a seq in `wanted` among the rest of `events`, or None."""
    for number, event in events:
        if event is not None and event.get("chain") == chain and event.get("seq") in wanted:
            return event["seq"], number
    return None


def verify_file(path: Path) -> VerifyResult:
    """Verify an audit file (or a captured log containing audit lines)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        return verify_lines(f)
