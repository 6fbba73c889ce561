"""Signed facts in the chart: the signing key from the operator's Secret (mounted read-only, named by
config.yaml's key_file), the render refused when several processes would each sign with a key of their own,
the sandbox's need for them in the ob_standard profile, and the backend's way to the public key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from jwcrypto import jwk

from gateway.config import check_workers, load_settings
from gateway.policy import FactAssertion

from .render import RELEASE, ci_values, in_signed_facts_secret, render, write_mounts, write_signed_facts_secret

ON: dict[str, Any] = {"config": {"upstream": {"signed_facts": {"enabled": True}}}}
SECRET: dict[str, Any] = {"existingSecret": "facts-key"}
REDIS: dict[str, Any] = {"enabled": True, "existingSecret": "dcr-redis"}
KEY_FILE = "/etc/dcr-gateway/signed-facts/key.pem"
EPHEMERAL = "it CHANGES AT EVERY RESTART"


def _sandbox(profile: str) -> dict[str, Any]:
    values = ci_values("sandbox-values")
    values["config"].setdefault("policies", {})["profile"] = profile
    return values


def test_the_secret_is_mounted_read_only_as_the_key_file(chart: helm.Chart) -> None:
    """signedFacts.existingSecret: only its key, projected as key.pem (0440, read through fsGroup), in a read-only
    whole-secret volume whose file is config.yaml's key_file; the chart creates no Secret and renders no key."""
    r = render(chart, {**ON, "replicaCount": 3, "redis": REDIS, "signedFacts": {**SECRET, "secretKey": "tls.key"}})
    (volume,) = [v for v in r.pod["volumes"] if "secret" in v]
    assert volume["secret"] == {"secretName": "facts-key", "defaultMode": 0o440,
                                "items": [{"key": "tls.key", "path": "key.pem"}]}
    (mount,) = [m for m in r.container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": "/etc/dcr-gateway/signed-facts", "readOnly": True}
    assert "subPath" not in mount
    assert r.config["upstream"]["signed_facts"] == {"enabled": True, "key_file": KEY_FILE}
    assert r.pod["securityContext"]["fsGroup"] == r.container["securityContext"]["runAsGroup"]
    assert r.all("Secret") == []
    assert "PRIVATE KEY" not in str(r.manifests)
    assert "Secret facts-key (key tls.key)" in r.notes and EPHEMERAL not in r.notes


def test_no_secret_no_mount(chart: helm.Chart) -> None:
    """Without the Secret: no volume, no key_file (the gateway generates its key)."""
    r = render(chart, {**ON, "replicaCount": 1})
    assert not [v for v in r.pod["volumes"] if "secret" in v]
    assert r.config["upstream"]["signed_facts"] == {"enabled": True}


def _pem(key: jwk.JWK, *, private: bool) -> bytes:
    return bytes(key.export_to_pem(private_key=private, password=None))


def test_published_keys_come_from_the_same_secret(chart: helm.Chart, tmp_path: Path) -> None:
    """signedFacts.publishedKeys: further keys of the Secret, projected under published/ and listed in
    published_key_files; the gateway, given the volume as projected, signs with key.pem and publishes both."""
    r = render(chart, {**ON, "signedFacts": {**SECRET, "publishedKeys": ["next.pub.pem"]}})
    (volume,) = [v for v in r.pod["volumes"] if "secret" in v]
    assert volume["secret"]["items"] == [{"key": "key.pem", "path": "key.pem"},
                                         {"key": "next.pub.pem", "path": "published/next.pub.pem"}]
    facts = r.config["upstream"]["signed_facts"]
    assert facts["published_key_files"] == ["/etc/dcr-gateway/signed-facts/published/next.pub.pem"]
    current, following = jwk.JWK.generate(kty="EC", crv="P-256"), jwk.JWK.generate(kty="EC", crv="P-256")
    secret = write_signed_facts_secret(r, tmp_path, {"key.pem": _pem(current, private=True),
                                                     "next.pub.pem": _pem(following, private=False)})
    config, _ = write_mounts(r, tmp_path)
    text = config.read_text()
    for path in [facts["key_file"], *facts["published_key_files"]]:  # the pod's paths, here
        text = text.replace(path, str(in_signed_facts_secret(r, path, secret)))
    config.write_text(text)
    assertion = FactAssertion.from_settings(load_settings(config, env={}))
    assert assertion is not None
    assert [k["kid"] for k in assertion.jwks()["keys"]] == [current.thumbprint(), following.thumbprint()]


@pytest.mark.parametrize(("values", "message"), [
    pytest.param({"signedFacts": {"publishedKeys": ["next.pub.pem"]}}, "signedFacts.publishedKeys: the keys are read",
                 id="published-without-secret"),
    pytest.param({"config": {"upstream": {"signed_facts": {"published_key_files": ["/k.pem"]}}}},
                 "published_key_files: set by the chart", id="published-in-config"),
])
def test_published_keys_only_from_the_secret(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    """Published keys come from the signedFacts Secret only: without it, or as files named in config, refused."""
    with pytest.raises(helm.HelmError) as info:
        render(chart, values)
    assert message in str(info.value)


ONE_KEY_EACH = [
    pytest.param({**ON, "replicaCount": 2, "redis": REDIS}, "replicaCount: 2", id="replicas"),
    pytest.param({**ON, "replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4},
                  "redis": REDIS}, "autoscaling.maxReplicas: 4", id="autoscaling"),
    pytest.param({**ON, "replicaCount": 1, "workers": 2, "redis": REDIS}, "workers: 2", id="workers"),
]


@pytest.mark.parametrize(("values", "cause"), ONE_KEY_EACH)
def test_several_signing_processes_without_the_secret_fail(chart: helm.Chart, values: dict[str, Any],
                                                           cause: str) -> None:
    """More than one pod or worker, each with a key of its own: the install fails, naming the cause and the fix."""
    with pytest.raises(helm.HelmError) as info:
        render(chart, values)
    message = str(info.value)
    assert f"config.upstream.signed_facts.enabled with {cause} needs signedFacts.existingSecret" in message
    assert "cannot verify the others' facts" in message


@pytest.mark.parametrize(("values", "cause"), ONE_KEY_EACH)
def test_the_same_processes_install_with_the_secret(chart: helm.Chart, values: dict[str, Any], cause: str) -> None:
    """The refusal is specific: the same values with the Secret render and set the key_file."""
    assert render(chart, {**values, "signedFacts": SECRET}).config["upstream"]["signed_facts"]["key_file"] == KEY_FILE


@pytest.mark.parametrize("values", [
    pytest.param({**ON, "replicaCount": 1}, id="one-replica"),
    pytest.param({**ON, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}}, id="hpa-of-one"),
    pytest.param({**ON, "replicaCount": 1, "workers": 1}, id="one-worker"),
])
def test_one_process_renders_with_a_key_made_at_start(chart: helm.Chart, values: dict[str, Any]) -> None:
    """One pod with one worker needs no Secret; NOTES says its key changes at every restart."""
    r = render(chart, values)
    assert "key_file" not in r.config["upstream"]["signed_facts"]
    assert EPHEMERAL in r.notes


def test_signed_facts_off_need_nothing(chart: helm.Chart) -> None:
    """Off (the default), several replicas render without a Secret and NOTES says nothing of them."""
    r = render(chart, {"replicaCount": 3, "redis": REDIS})
    assert r.config["upstream"]["signed_facts"] == {"enabled": False}
    assert "Signed facts" not in r.notes


@pytest.mark.parametrize("values", [
    pytest.param({"config": {"upstream": {"signed_facts": {"key_file": "/etc/keys/k.pem"}}}}, id="in-config"),
    pytest.param({"extraEnv": [{"name": "DCRGW_UPSTREAM__SIGNED_FACTS__KEY_FILE", "value": "/k.pem"}]}, id="in-env"),
])
def test_the_key_file_is_the_charts(chart: helm.Chart, values: dict[str, Any]) -> None:
    """key_file in values or in the environment is refused: the key comes from signedFacts.existingSecret."""
    with pytest.raises(helm.HelmError) as info:
        render(chart, values)
    assert "set by the chart" in str(info.value) and "signedFacts.existingSecret" in str(info.value)


@pytest.mark.parametrize(("profile", "enabled"), [("ob_standard", True), ("bank", False)])
def test_the_sandbox_signs_facts_in_the_ob_standard_profile(chart: helm.Chart, profile: str, enabled: bool) -> None:
    """With the in-pod sandbox, the chart turns signed facts on where the sandbox authenticates registrations by the
    certificate (ob_standard), with the key made at start (one pod, one worker, whatever replicaCount says)."""
    r = render(chart, {**_sandbox(profile), "replicaCount": 2})  # the sandbox runs one pod whatever it says
    assert r.config["upstream"]["signed_facts"] == {"enabled": enabled}
    assert (EPHEMERAL in r.notes) is enabled
    bearer = _sandbox(profile)
    bearer["config"]["sandbox"] = {"registration_auth": "bearer"}
    assert render(chart, bearer).config["upstream"]["signed_facts"] == {"enabled": False}


def test_rendered_configs_load_in_the_gateway(chart: helm.Chart, tmp_path: Path) -> None:
    """The gateway's own validation accepts the rendered configs: the production one (2 workers) through its
    Secret's key_file, the OB standard sandbox through the signed facts the chart turned on."""
    config, _ = write_mounts(render(chart, ci_values("production-values")), tmp_path / "prod")
    prod = load_settings(config, env={"DCRGW_STATE__REDIS__URL": "redis://127.0.0.1:6399/0"})
    assert (prod.upstream.signed_facts.enabled, prod.upstream.signed_facts.key_file) == (True, KEY_FILE)
    check_workers(prod, prod.server.workers)
    config, _ = write_mounts(render(chart, _sandbox("ob_standard")), tmp_path / "sandbox")
    sandbox = load_settings(config, env={})
    assert sandbox.upstream.signed_facts.enabled and sandbox.sandbox_registration_auth == "certificate"


def _admin_sources(r: Any) -> list[dict[str, Any]]:
    np = r.one("NetworkPolicy")
    return [peer for rule in np["spec"]["ingress"] if rule["ports"] == [{"port": "admin", "protocol": "TCP"}]
            for peer in rule["from"]]


def test_network_policy_admits_the_backend_to_the_admin_port_only_when_selected(chart: helm.Chart) -> None:
    """networkPolicy.backend: its selectors may reach the admin port (/facts/jwks.json); empty (default), no rule."""
    assert len(_admin_sources(render(chart))) == 1  # Prometheus only
    backend = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "payments"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "dcr-backend"}}}
    sources = _admin_sources(render(chart, {"networkPolicy": {"backend": backend}}))
    assert sources[1:] == [backend]
    only_ns = {"namespaceSelector": backend["namespaceSelector"]}
    assert _admin_sources(render(chart, {"networkPolicy": {"backend": only_ns}}))[1:] == [only_ns]
    prod = render(chart, ci_values("production-values"))
    assert _admin_sources(prod)[1:] == [ci_values("production-values")["networkPolicy"]["backend"]]
    assert prod.one("NetworkPolicy")["metadata"]["name"] == RELEASE
