"""A real nginx mTLS ingress in front of a gateway, as the OB conformance tool meets a bank's deployment.

Debian's `nginx` (.ci/run installs it) runs as the test's own process — no root: its prefix, configuration,
pid, logs and temporary directories are in the test's directory, it listens on a free loopback port, in the
foreground (`daemon off`, `master_process off`). It terminates TLS with a server certificate from a CA made
here, asks for a client certificate without judging it (`ssl_verify_client optional_no_ca`, as the OB tool's
own setup does), and forwards it to the gateway in `ssl-client-cert` (`$ssl_client_escaped_cert`, the
URL-escaped PEM) — exactly the directives docs/conformance.md gives a bank.
"""

from __future__ import annotations

import ipaddress
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.sandbox.certificates import certificate_pem, generate_private_key, private_pem

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")


@dataclass(frozen=True)
class ServerCertificate:
    """The ingress's TLS server certificate and key files, and the CA a client trusts it by."""

    ca: Path
    cert: Path
    key: Path


def make_server_certificate(directory: Path, host: str = "127.0.0.1") -> ServerCertificate:
    """A test CA and a server certificate for `host` (an IP address or DNS name in subjectAltName) it issued."""
    directory.mkdir(parents=True, exist_ok=True)
    start = datetime.now(UTC) - timedelta(minutes=5)
    ca_key, leaf_key = generate_private_key(), generate_private_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dcr-gateway test ingress CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    try:
        name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        name = x509.DNSName(host)
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    made = ServerCertificate(directory / "ingress-ca.pem", directory / "server.pem", directory / "server-key.pem")
    made.ca.write_bytes(certificate_pem(ca))
    made.cert.write_bytes(certificate_pem(leaf))
    made.key.write_bytes(private_pem(leaf_key))
    made.key.chmod(0o600)
    return made


def nginx_binary() -> str:
    """Debian's nginx; the test fails (never skips) without it: CI must run the conformance scenarios."""
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found is not None:
            return found
    pytest.fail("nginx is not installed: the OB conformance scenarios run through a real nginx ingress "
                "(apt-get install nginx; .ci/run installs it in CI)")


def nginx_conf(prefix: Path, port: int, upstream: str, server: ServerCertificate) -> str:
    """The ingress: TLS with the server certificate, a client certificate asked for and forwarded unjudged."""
    temp = "\n".join(f"  {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                          "uwsgi", "scgi"))
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} info;
events {{ worker_connections 128; }}
http {{
  access_log {prefix / 'access.log'};
{temp}
  # The bank's profile sends a `client_id` header: nginx drops headers with underscores by default.
  underscores_in_headers on;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {server.cert};
    ssl_certificate_key {server.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_verify_client optional_no_ca;
    location / {{
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header ssl-client-cert $ssl_client_escaped_cert;
    }}
  }}
}}
"""


def _tls_answers(port: int, ca: Path) -> bool:
    """True once a TLS handshake with the ingress succeeds."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock, \
                context.wrap_socket(sock, server_hostname="127.0.0.1"):
            return True
    except OSError:
        return False


@contextmanager
def nginx_ingress(prefix: Path, port: int, upstream: str, server: ServerCertificate) -> Iterator[str]:
    """Run nginx in front of `upstream` on 127.0.0.1:`port` until the block ends; yields its https URL."""
    binary = nginx_binary()
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, upstream, server))
    log = prefix / "nginx.out"
    with log.open("ab") as out:
        proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _tls_answers(port, server.ca):
            if proc.poll() is not None:
                errors = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
                raise AssertionError(f"nginx exited with {proc.returncode}:\n{log.read_text()}{errors}")
            assert time.monotonic() < deadline, "nginx did not answer TLS within 20 s"
            time.sleep(0.05)
        yield f"https://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful shutdown
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
