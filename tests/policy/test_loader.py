"""Policy validation (file:line: key errors), hot reload, and the policy CLI on the shipped policies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from gateway.config import Settings
from gateway.observability.metrics import Metrics
from gateway.policy.loader import PolicyError, load_policies
from gateway.policy.reload import PolicyHolder, PolicyReloader
from gateway.runtime import build_runtime
from tests.conftest import ROOT, SHIPPED_POLICIES, StartServer
from tests.waiting import eventually

TRUST = {"token_issuers": {"bank": {"issuer": "https://as", "jwks_uri": "http://127.0.0.1:9/jwks"}}}


def services():
    return build_runtime(Settings.model_validate({"trust": TRUST}), None).services


def errors_for(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path, services())
    return info.value.messages


GOOD = "policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n    checks:\n      - bearer_tokn: {}\n",
         "p.yaml:5: policies[0].checks[0].bearer_tokn: unknown check; valid checks: bearer_token, body_size"),
        ("policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n    checks:\n"
         "      - bearer_token: {issuers: [bank], scopes: [x]}\n",
         "p.yaml:5: policies[0].checks[0].bearer_token.scopes: unknown key"),
        ("policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n    checks:\n"
         "      - bearer_token: {issuers: [nope]}\n",
         "p.yaml:5: policies[0].checks[0].bearer_token.issuers[0]: unknown issuer 'nope' (config trust.token_issuers: bank)"),
        ("policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n    checks:\n"
         "      - body_size: {max_bytes: lots}\n",
         'p.yaml:5: policies[0].checks[0].body_size.max_bytes: expected a positive integer, got "lots"'),
        ("policies:\n  - name: a\n    match: {methods: [GETT], path: /a}\n",
         "p.yaml:3: policies[0].match.methods[0]: expected 'GET'"),
        ("policies:\n  - name: a\n    match: {methods: [GET], path: /a/../b}\n",
         "p.yaml:3: policies[0].match.path: invalid path segment '..'"),
        ("policies:\n  - name: a\n    mode: dry\n    match: {methods: [GET], path: /a}\n",
         "p.yaml:3: policies[0].mode: expected 'enforce' or 'audit'"),
        ("policies:\n  - name: Bad-Name\n    match: {methods: [GET], path: /a}\n",
         "p.yaml:2: policies[0].name: expected a snake_case name"),
        ("policies:\n  - name: a\n    match: {methods: [GET], path: '/x/{Id}'}\n"
         "  - name: b\n    match: {methods: [GET, PUT], path: /x/lit}\n",
         "p.yaml:5: policies[1].match: route GET /x/lit overlaps /x/{Id}"),
        ("policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n  - name: a\n    match: {methods: [PUT], path: /a}\n",
         "p.yaml:4: policies[1].name: duplicate policy name"),
        ("policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n    checks:\n      - {}\n",
         "p.yaml:5: policies[0].checks[0]: expected a one-key mapping"),
        ("polices: []\n", "p.yaml:1: polices: unknown key"),
        ("policies:\n  - name: a\n    match: {methods: [GET], path: /a\n", "invalid YAML"),
    ],
    ids=["unknown-check", "unknown-param", "unknown-issuer", "bad-param-type", "bad-method", "dot-segment",
         "bad-mode", "bad-name", "overlap", "duplicate-name", "empty-check", "typo-top-level", "broken-yaml"],
)
def test_errors_name_file_line_and_key(tmp_path, text, expected):
    """Every policy error says where (file:line), which key, and what is wrong."""
    messages = errors_for(tmp_path, text)
    assert any(expected in m for m in messages), messages


def test_all_errors_of_a_set_are_reported(tmp_path):
    """Problems in several files are all listed, so one lint run shows everything."""
    (tmp_path / "a.yaml").write_text("policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n    checks: [x: {}]\n")
    (tmp_path / "b.yaml").write_text("policies:\n  - name: b\n    match: {methods: [GET], path: b}\n")
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path, services())
    assert len(info.value.messages) == 2


def test_hidden_entries_and_test_files_are_not_policies(tmp_path):
    """ConfigMap `..data` style entries and *_test.yaml files are skipped."""
    (tmp_path / "p.yaml").write_text(GOOD)
    (tmp_path / "p_test.yaml").write_text("cases: oops\n")
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "x.yaml").write_text("garbage: [")
    assert [p.name for p in load_policies(tmp_path, services()).policies] == ["a"]


async def test_hot_reload_swaps_good_sets_and_keeps_serving_through_bad_ones(tmp_path, start_server: StartServer,
                                                                               running_gateway):
    """A valid edit takes effect without restart; a broken one is rejected and the last good set keeps serving."""
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_get("/{p}", echo)
    upstream = await start_server(app)
    (tmp_path / "p.yaml").write_text(GOOD)
    gw = await running_gateway(str(upstream.make_url("")).rstrip("/"), policy_dir=tmp_path, trust=TRUST)
    reloader = PolicyReloader(tmp_path, gw.services, gw.holder, gw.metrics, unmatched_status=404, interval=0.05)
    assert (await gw.client.get("/a")).status == 200
    assert (await gw.client.get("/b")).status == 404

    # A good edit, applied by the polling task.
    (tmp_path / "p.yaml").write_text(GOOD + "  - name: b\n    match: {methods: [GET], path: /b}\n")
    import asyncio

    task = asyncio.create_task(reloader.run())
    await eventually(lambda: len(gw.holder.current.policies) == 2, "the poller to apply the good edit")
    assert (await gw.client.get("/b")).status == 200
    good_version = gw.holder.current.version
    assert gw.sample("dcr_gateway_policy_reloads_total", {"result": "success"}) == 1

    # A broken edit: rejected, counted once, the good set keeps serving.
    (tmp_path / "p.yaml").write_text(GOOD + "  - name: c\n    match: {methods: [GET], path: /c}\n    checks: [nope: {}]\n")
    await eventually(lambda: gw.sample("dcr_gateway_policy_reloads_total", {"result": "failure"}) > 0,
                     "the poller to reject the broken edit")
    task.cancel()
    for _ in range(2):  # the poller's next rounds on the same broken file
        assert not await reloader.reload()
    assert gw.sample("dcr_gateway_policy_reloads_total", {"result": "failure"}) == 1
    assert gw.holder.current.version == good_version
    assert (await gw.client.get("/b")).status == 200
    assert "unknown check" in reloader.last_error[0]


async def test_configmap_symlink_swap_is_seen(tmp_path):
    """Kubernetes swaps the `..data` symlink atomically; the reloader reads the new target."""
    for version, path in (("v1", "/a"), ("v2", "/b")):
        d = tmp_path / f"..{version}"
        d.mkdir()
        (d / "p.yaml").write_text(f"policies:\n  - name: p\n    match: {{methods: [GET], path: {path}}}\n")
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "p.yaml").symlink_to("..data/p.yaml")
    svc = services()
    holder = PolicyHolder(load_policies(tmp_path, svc))
    reloader = PolicyReloader(tmp_path, svc, holder, Metrics(), unmatched_status=404, interval=1)
    assert holder.current.policies[0].template == "/a"
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert await reloader.reload() is True
    assert holder.current.policies[0].template == "/b"
    assert await reloader.reload() is False  # unchanged: no swap


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "policy", *args, "--config", str(ROOT / "config.yaml")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_policy_lint_shipped_policies():
    """`policy lint` accepts the shipped policies."""
    proc = _cli("lint")
    assert proc.returncode == 0, proc.stderr
    assert "policies ok" in proc.stdout


def test_policy_lint_reports_file_line_errors(tmp_path):
    """`policy lint DIR` exits 1 with file:line: key: problem lines."""
    (tmp_path / "p.yaml").write_text("policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n    checks: [x: {}]\n")
    proc = _cli("lint", str(tmp_path))
    assert proc.returncode == 1
    assert f"{tmp_path / 'p.yaml'}:4: policies[0].checks[0].x: unknown check" in proc.stderr


def test_policy_test_passes_on_the_shipped_tests():
    """`policy test` runs every shipped case and they all pass."""
    proc = _cli("test")
    assert proc.returncode == 0, proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    passed, failed = (int(x.split()[0]) for x in last.split(", "))
    assert failed == 0 and passed >= 20


def test_policy_test_fails_when_an_expectation_is_wrong(tmp_path):
    """A case whose expectation does not hold makes `policy test` exit 1 and say why."""
    for f in SHIPPED_POLICIES.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text())
    (tmp_path / "extra_test.yaml").write_text(
        "cases:\n  - name: wrong on purpose\n    request: {method: GET, path: /open-banking/v3.1/register/x}\n"
        "    expect: {decision: allow}\n"
    )
    proc = _cli("test", str(tmp_path))
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "wrong on purpose" in proc.stdout and "decision: expected 'allow'" in proc.stdout


def test_policy_explain():
    """`policy explain` names the policy, its source line and the checks in order."""
    proc = _cli("explain", "--method", "DELETE", "--path", "/open-banking/v3.1/register/abc")
    assert proc.returncode == 0
    out = proc.stdout
    assert "dcr_register_delete" in out and "ClientId=abc" in out
    assert out.index("bearer_token") < out.index("client_id_header") < out.index("client_ownership")
    proc = _cli("explain", "--method", "GET", "--path", "/nope")
    assert "no policy applies -> 404" in proc.stdout
