"""Every file in deploy/ is checked by the tool that would read it: Envoy's own `--mode
validate` for the Envoy templates (filled in as the quickstart fills them), `systemd-analyze
verify` for the unit, and a YAML parse with schema assertions for the Kubernetes and Istio
manifests. Each check is also shown to catch a broken copy of the file."""

import re
import shutil
import string
import subprocess

import pytest
import yaml

from conftest import ESM, ROOT, run
from envoy_harness import envoy_bin

DEPLOY = ROOT / "deploy"
ENVOY_VALUES = {
    "server-sidecar.yaml": dict(
        NODE_ID="api", ENVOY_ADMIN_PORT=15000, LISTEN_ADDRESS="0.0.0.0", LISTEN_PORT=15443,
        TRUST_DOMAIN="example.org", ESM_AGENT_SOCKET="/var/lib/esm/agent.sock",
        ESM_AUTHZ_ADDRESS="127.0.0.1", ESM_AUTHZ_PORT=9191, UPSTREAM_ADDRESS="127.0.0.1",
        UPSTREAM_PORT=8080),
    "client-sidecar.yaml": dict(
        NODE_ID="web", ENVOY_ADMIN_PORT=15001, LISTEN_PORT=15080,
        SERVER_ID="spiffe://example.org/ns/prod/sa/api", SERVER_ADDRESS="10.0.0.7", SERVER_PORT=15443,
        ESM_AGENT_SOCKET="/var/lib/esm/agent.sock"),
}


def envoy_validate(path):
    return subprocess.run([str(envoy_bin()), "--mode", "validate", "-c", str(path), "--log-level", "error",
                           "--use-dynamic-base-id"], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", sorted(ENVOY_VALUES))
def test_envoy_template_validates_and_documents_every_placeholder(name, tmp_path):
    text = (DEPLOY / "envoy" / name).read_text()
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))
    assert placeholders == set(ENVOY_VALUES[name]), "a placeholder is missing from the test's values"
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert [p for p in sorted(placeholders) if p not in header] == [], "undocumented placeholder"
    rendered = tmp_path / name
    rendered.write_text(string.Template(text).substitute(ENVOY_VALUES[name]))
    r = envoy_validate(rendered)
    assert r.returncode == 0, r.stdout + r.stderr
    # The same check on a copy with a misspelled field fails: validation reads the file.
    broken = tmp_path / f"broken-{name}"
    broken.write_text(rendered.read_text().replace("connect_timeout:", "connect_timout:", 1))
    assert envoy_validate(broken).returncode != 0


def test_server_sidecar_fails_closed_and_requires_client_certificates():
    doc = yaml.safe_load(string.Template((DEPLOY / "envoy" / "server-sidecar.yaml").read_text())
                         .substitute(ENVOY_VALUES["server-sidecar.yaml"]))
    chain = doc["static_resources"]["listeners"][0]["filter_chains"][0]
    tls = chain["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    hcm = chain["filters"][0]["typed_config"]
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"
    authz = hcm["http_filters"][0]
    assert authz["name"] == "envoy.filters.http.ext_authz"
    assert authz["typed_config"]["failure_mode_allow"] is False
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    for name in ("esm_sds", "esm_authz"):
        opts = clusters[name]["typed_extension_protocol_options"]
        assert "http2_protocol_options" in next(iter(opts.values()))["explicit_http_config"]
    sds_addr = clusters["esm_sds"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert sds_addr == {"pipe": {"path": "/var/lib/esm/agent.sock"}}


def systemd_verify(unit):
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=unit.parent)


def test_systemd_unit_is_hardened_and_verifies(tmp_path):
    text = (DEPLOY / "systemd" / "esm.service").read_text()
    directives = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines()
                  if "=" in line and not line.startswith("#")}
    assert directives["ProtectSystem"] == "strict"
    assert directives["NoNewPrivileges"] == "yes"
    assert directives["User"] == "esm" and directives["Group"] == "esm"
    assert directives["ReadWritePaths"] == "/var/lib/esm"
    assert "--dir /var/lib/esm" in directives["ExecStart"]
    assert directives["CapabilityBoundingSet"] == "" and directives["AmbientCapabilities"] == ""
    # Attestation reads /proc/PID/exe of peers: /proc must stay visible.
    assert "ProtectProc" not in directives
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit's directives were checked, "
                    "`systemd-analyze verify` was not run")
    # verify insists the ExecStart binary exists: point the copy at the esm under test.
    unit = tmp_path / "esm.service"
    unit.write_text(text.replace("/usr/local/bin/esm", str(ESM)))
    r = systemd_verify(unit)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    # A misspelled hardening value is only a warning to systemd (exit 0): the test reads
    # stderr, and catches it.
    broken = tmp_path / "broken" / "esm.service"
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=stric"))
    assert "protect system value" in systemd_verify(broken).stderr


def manifests(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        assert isinstance(d.get("apiVersion"), str) and "/" in d["apiVersion"] or d["apiVersion"] == "v1"
        assert isinstance(d.get("kind"), str)
        assert d["metadata"]["name"]
    return {d["kind"]: d for d in docs}


def test_kubernetes_daemonset_serves_sds_on_a_host_socket_and_authz_to_its_node():
    docs = manifests(DEPLOY / "kubernetes" / "esm.yaml")
    assert set(docs) == {"Namespace", "ServiceAccount", "DaemonSet", "Service"}
    ds, svc = docs["DaemonSet"], docs["Service"]
    assert ds["apiVersion"] == "apps/v1" and svc["apiVersion"] == "v1"
    ns = docs["Namespace"]["metadata"]["name"]
    assert ds["metadata"]["namespace"] == ns and svc["metadata"]["namespace"] == ns
    pod = ds["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["internalTrafficPolicy"] == "Local"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in spec["initContainers"] + spec["containers"]:
        assert c["name"] and c["image"]
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"] is True
        for m in c["volumeMounts"]:
            assert m["name"] in volumes, f"{c['name']} mounts an undefined volume {m['name']}"
    esm = spec["containers"][0]
    env = {e["name"]: e["value"] for e in esm["env"]}
    mounts = {m["name"]: m["mountPath"] for m in esm["volumeMounts"]}
    sock = env["ESM_AGENT_SOCKET"]
    # The socket lives in the host directory workloads mount, and that is not the data dir.
    assert sock.startswith(mounts["agent-socket"] + "/")
    assert volumes["agent-socket"]["hostPath"]["path"] == mounts["agent-socket"]
    assert mounts["data"] != mounts["agent-socket"]
    assert "upstream-ca" not in mounts, "the upstream CA key is for the init container only"
    ports = {p["name"]: p["containerPort"] for p in esm["ports"]}
    assert env["ESM_AUTHZ_LISTEN"].endswith(f":{ports['authz']}")
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["authz"]
    assert esm["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_istio_extension_provider_points_at_the_node_local_esm_and_fails_closed():
    docs = manifests(DEPLOY / "istio" / "extension-provider.yaml")
    k8s = manifests(DEPLOY / "kubernetes" / "esm.yaml")
    provider = docs["IstioOperator"]["spec"]["meshConfig"]["extensionProviders"][0]
    grpc = provider["envoyExtAuthzGrpc"]
    svc = k8s["Service"]
    assert grpc["service"] == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    assert grpc["port"] == svc["spec"]["ports"][0]["port"]
    assert grpc["failOpen"] is False
    policy = docs["AuthorizationPolicy"]
    assert policy["apiVersion"].startswith("security.istio.io/")
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"]["name"] == provider["name"]


DASHBOARD = DEPLOY / "grafana" / "esm-dashboard.json"


def exposed_series(admin):
    """Every series name `/metrics` declares, as PromQL names them: a counter with `_total`,
    a histogram with `_bucket`, `_sum` and `_count` (a family with no sample yet, such as
    the checkpoint age before the first checkpoint, counts: it is declared)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    names = set()
    for fam in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(fam.type, [""])
        names.update(fam.name + s for s in suffixes)
        names.update(s.name for s in fam.samples)
    return names


def dashboard_problems(dashboard, exposed):
    """Each PromQL expression that names no esm series, or one `/metrics` does not expose."""
    problems = []
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            named = set(re.findall(r"\besm_[a-z0-9_]+", target["expr"]))
            if not named:
                problems.append((panel["title"], target["expr"], "names no esm series"))
            problems.extend((panel["title"], target["expr"], n) for n in sorted(named - exposed))
    return problems


def test_grafana_dashboard_only_queries_series_that_metrics_exposes(tmp_path, stack):
    import json

    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", "example.org", "--dir", data)
    _, _, admin = esm(data)
    exposed = exposed_series(admin)
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard_problems(dashboard, exposed) == []
    # What the dashboard is for: each of these is on it.
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for series in ("esm_authz_decisions_total", "esm_authz_decision_latency_seconds_bucket",
                   "esm_audit_queue_depth", "esm_audit_commit_latency_seconds_bucket",
                   "esm_audit_checkpoint_age_seconds", "esm_ca_signing_ca_expires_in_seconds",
                   "esm_agent_sds_push_after_ca_change_seconds_bucket", "esm_authz_policy_reloads_total"):
        assert series in exprs, series
    # A misspelt series is caught.
    broken = json.loads(DASHBOARD.read_text())
    broken["panels"][0]["targets"][0]["expr"] = "rate(esm_authz_decision_total[5m])"
    assert [p[2] for p in dashboard_problems(broken, exposed)] == ["esm_authz_decision_total"]
