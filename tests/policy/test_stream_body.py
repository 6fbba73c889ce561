"""`stream_body` and `allow_body_on`: per-route body choices, validated when policies load."""

from __future__ import annotations

from pathlib import Path

from gateway.policy.loader import load_policies
from tests.policy.test_loader import errors_for, services


def test_a_streaming_policy_cannot_have_a_check_that_reads_the_body(tmp_path: Path) -> None:
    text = """policies:
  - name: upload
    match: {methods: [POST], path: /upload}
    stream_body: {max_bytes: 1000}
    checks:
      - body_size: {max_bytes: 10}
"""
    (error,) = errors_for(tmp_path, text)
    assert "p.yaml:4: policies[0].stream_body:" in error and "cannot have a check that reads the body" in error


def test_body_choices_reach_the_compiled_policy(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("""policies:
  - name: upload
    match: {methods: [POST], path: /upload}
    stream_body: {max_bytes: 1000, idle_seconds: 2, total_seconds: 9}
  - name: purge
    match: {methods: [DELETE], path: /purge}
    allow_body_on: [DELETE]
""")
    upload, purge = load_policies(tmp_path, services()).policies
    assert upload.stream_body is not None
    assert (upload.stream_body.max_bytes, upload.stream_body.idle, upload.stream_body.total) == (1000, 2, 9)
    assert purge.stream_body is None and purge.allow_body_on == {"DELETE"}
