"""The structlog setup: get_logger's loggers keep their methods once structlog caches the assembled logger, and
only then (a logger used before configuration follows the configuration that comes later)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator

import pytest
import structlog

from gateway.observability import clock
from gateway.observability.logging import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_logger_used_before_configuration_follows_the_configuration(capsys):
    log = get_logger("early")
    log.info("before")  # structlog's defaults: a console line, not JSON
    configure_logging("json", "info")
    log.info("after", n=1)
    lines = _lines(capsys.readouterr().out)
    assert [(line["event"], line["component"], line["n"]) for line in lines] == [("after", "early", 1)]


def test_a_configured_logger_keeps_its_methods_and_writes_the_same_lines(capsys):
    configure_logging("json", "info")
    log = get_logger("server")
    log.info("request", method="GET", status=200)
    assert "info" in vars(log)  # looked up once: no proxy __getattr__ on later calls
    log.info("request", method="POST", status=201)
    log.debug("filtered")
    lines = _lines(capsys.readouterr().out)
    assert [(line["event"], line["component"], line["method"], line["status"], line["level"]) for line in lines] == [
        ("request", "server", "GET", 200, "info"), ("request", "server", "POST", 201, "info")]


def test_secret_names_private_keys_and_jws_are_masked_in_every_line(capsys):
    configure_logging("json", "info")
    jws = "eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJ0cHAifQ.c2lnbmF0dXJl"
    get_logger("t").info(
        "event", token="abc", Authorization="Bearer abc", note=f"before {jws} after",
        key="x\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n",
        cert="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", plain="nothing here", n=3)
    (line,) = _lines(capsys.readouterr().out)
    assert {k: line[k] for k in ("token", "Authorization", "note", "key", "cert", "plain", "n")} == {
        "token": "[redacted]", "Authorization": "[redacted]", "note": "before [redacted: jws] after",
        "key": "[redacted: private key]", "cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "plain": "nothing here", "n": 3}


@pytest.mark.parametrize("ns", [1765032846572268123, 1765032846000000999, 1765032846999999999])
def test_the_timestamp_is_written_as_structlogs_iso_utc_stamper_writes_it(capsys, monkeypatch, ns):
    """`datetime.isoformat()` with `Z`: microseconds truncated, no fraction at all in a whole second."""
    monkeypatch.setattr(clock.time, "time_ns", lambda: ns)
    configure_logging("json", "info")
    get_logger("t").info("event")
    (line,) = _lines(capsys.readouterr().out)
    expected = (datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(microseconds=ns // 1000))
    assert line["timestamp"] == expected.isoformat().replace("+00:00", "Z")
