"""nginx as a bench target: a pure reverse proxy, unprivileged, every path inside a temporary prefix."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from .net import LOOPBACK, free_ports
from .procs import ProcessGroup

_DEBIAN_PATH = "/usr/sbin/nginx"  # not on PATH for ordinary users


def find_nginx() -> str | None:
    """The nginx binary, or None when it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return _DEBIAN_PATH if os.access(_DEBIAN_PATH, os.X_OK) else None


def render_config(prefix: Path, port: int, upstream_url: str, workers: int = 1) -> str:
    """nginx.conf proxying 127.0.0.1:`port` to the upstream with keep-alive, writing only under `prefix`."""
    upstream = urlsplit(upstream_url)
    # Run as root, nginx would switch its workers to `nobody`; keep them as the current user instead.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream bench_upstream {{
        server {upstream.hostname}:{upstream.port};
        keepalive 256;
    }}
    server {{
        listen {LOOPBACK}:{port};
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(procs: ProcessGroup, name: str, workdir: Path, upstream_url: str) -> tuple[str, int]:
    """Start nginx in the foreground (`daemon off`) in front of `upstream_url`; return (URL, pid)."""
    binary = find_nginx()
    if binary is None:
        raise FileNotFoundError("nginx not installed (Debian: apt-get install nginx)")
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    conf = prefix / "nginx.conf"
    conf.write_text(render_config(prefix, port, upstream_url))
    argv = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf), "-g", "daemon off;"]
    proc = procs.spawn(name, argv)
    return f"http://{LOOPBACK}:{port}", proc.pid
