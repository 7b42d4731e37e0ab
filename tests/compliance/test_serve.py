"""`esm serve`: admin endpoints answer, the CA rotates on schedule while it runs, and it
stops cleanly on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import ESM, run
from envoy_harness import stop_process


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def serve(tmp_path, esm_bin):
    procs = []

    def start(data, env=None):
        port = free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
        full_env.update(env or {})
        full_env["ESM_ADMIN_LISTEN"] = f"127.0.0.1:{port}"
        p = subprocess.Popen([str(ESM), "serve", "--dir", str(data)], env=full_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if get(base + "/healthz")[0] == 200:
                    return p, base
            except OSError:
                pass
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.1)
        raise AssertionError("esm serve did not come up")

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def test_admin_endpoints_and_clean_sigterm(tmp_path, ca, serve):
    p, base = serve(ca)
    assert get(base + "/healthz") == (200, "ok\n")
    assert get(base + "/readyz")[0] == 200
    status, metrics = get(base + "/metrics")
    assert status == 200
    assert "esm_ca_signing_ca_expiry_timestamp_seconds" in metrics
    assert 'esm_ca_authorities{status="active"} 2' in metrics
    assert "esm_audit_events_appended_total" in metrics
    assert "esm_audit_events_dropped_total 0" in metrics
    assert get(base + "/nope")[0] == 404
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0


def test_rotates_the_signing_ca_on_schedule_while_serving(tmp_path, esm_bin, serve):
    env = {"ESM_CA_INTERMEDIATE_TTL": "12s"}
    data = tmp_path / "d"
    run("init", "--trust-domain", "example.org", "--dir", data, env=env)
    first = run("ca", "show", "--dir", data, env=env).stdout
    p, base = serve(data, env)
    deadline = time.time() + 30
    while time.time() < deadline:
        metrics = get(base + "/metrics")[1]
        if 'esm_ca_authorities{status="retired"} 0' not in metrics:
            break
        time.sleep(0.5)
    assert 'esm_ca_authorities{status="retired"} 0' not in metrics, metrics
    assert get(base + "/readyz")[0] == 200
    after = run("ca", "show", "--dir", data, env=env).stdout
    assert after.count("retired") >= 1, after
    assert first != after
    # Issuance keeps working against the rotated CA while serve runs.
    run("cert", "issue", "--spiffe-id", "spiffe://example.org/x", "--out", tmp_path / "o", "--dir", data,
        env=env)
    # Each scheduled step is in the audit log, by the rotator; stopping signs a checkpoint.
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    tail = run("audit", "tail", "-n", "100", "--dir", data, env=env).stdout
    steps = [json.loads(line) for line in tail.splitlines()]
    rotated = [e for e in steps if e["kind"] == "ca.rotated" and e["actor"] == "esm:rotator"]
    assert {e["action"] for e in rotated} >= {"prepare-intermediate", "activate-intermediate"}
    assert run("audit", "verify", "--dir", data, env=env).stdout.startswith("ok:")


def test_serve_refuses_a_taken_port(tmp_path, ca):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run("serve", "--dir", ca, env={"ESM_ADMIN_LISTEN": f"127.0.0.1:{port}"}, check=False)
    assert p.returncode == 2 and "admin.listen" in p.stderr


def ca_metrics(base):
    """What /metrics says of the CA the server serves (its authorities and bundle)."""
    _, metrics = get(base + "/metrics")
    return [l for l in metrics.splitlines() if l.startswith("esm_ca_")]


def test_ca_rotate_from_the_cli_reaches_the_running_server_at_once(tmp_path, ca, serve):
    # Without being told, the server would see a rotation made by another process at its
    # next poll (every second); `esm ca rotate` tells it through the admin socket.
    p, base = serve(ca)
    for step in (["prepare", "--root"], ["activate", "--root"], ["prepare"]):
        before = ca_metrics(base)
        out = run("ca", "rotate", *step, "--dir", ca)
        assert out.stdout.startswith("done:"), out.stdout
        told = time.time()
        while ca_metrics(base) == before:
            assert time.time() - told < 0.3, f"{step}: the server did not follow at once"
            time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0


def readyz_while_starting(data, env, limit=10.0):
    """Starts esm serve and asks /readyz every 50 ms from the first moment, until it has
    answered 200, the process has exited, or `limit` seconds passed. Returns the process,
    the statuses seen (None: no answer), and whether the ext_authz port and the agent socket
    were up at the first 200."""
    admin, authz = free_port(), free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
    full_env.update(env or {})
    full_env["ESM_ADMIN_LISTEN"] = f"127.0.0.1:{admin}"
    full_env["ESM_AUTHZ_LISTEN"] = f"127.0.0.1:{authz}"
    p = subprocess.Popen([str(ESM), "serve", "--dir", str(data)], env=full_env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, up_at_ready = [], None
    end = time.time() + limit
    try:
        while time.time() < end and p.poll() is None:
            try:
                status = get(f"http://127.0.0.1:{admin}/readyz")[0]
            except OSError:
                status = None
            seen.append(status)
            if status == 200:
                with socket.socket() as s:
                    up_at_ready = (s.connect_ex(("127.0.0.1", authz)) == 0,
                                   (data / "agent.sock").exists())
                break
            time.sleep(0.05)
    finally:
        stop_process(p)
    return p, seen, up_at_ready, p.stderr.read()


def test_readyz_is_not_ready_until_ca_policy_and_audit_store_are(tmp_path, esm_bin):
    """/readyz answers 200 only once the signing CA is loaded, every policy set has loaded
    and passed its tests, and the audit store is open: esm serves the admin endpoints last.
    While the audit store refuses writes it is 503 (test_audit_faults), and a signing CA
    outside its validity is 503 (src/admin.rs's unit tests)."""
    good = make_data(tmp_path, "good")
    p, seen, up_at_ready, err = readyz_while_starting(good, {})
    assert seen[-1] == 200, (seen, err)
    assert up_at_ready == (True, True), "ready before the ext_authz port or the agent socket"
    assert p.returncode == 0

    # A policy that does not compile: esm stops before it is ever ready.
    broken = make_data(tmp_path, "policy")
    rego = sorted((broken / "policies").rglob("*.rego"))[0]
    rego.write_text(rego.read_text() + "\nthis is not rego {\n")
    p, seen, _, err = readyz_while_starting(broken, {})
    assert 200 not in seen, seen
    assert p.returncode not in (None, 0), "esm served with a broken policy"
    assert "policy" in err, err

    # An audit store that cannot be reached: never ready.
    closed = free_port()
    env = {"ESM_AUDIT_URL": f"postgres://postgres@127.0.0.1:{closed}/none"}
    p, seen, _, err = readyz_while_starting(make_data(tmp_path, "store"), env, limit=8)
    assert 200 not in seen, seen

    # A CA whose signing keys are gone: never ready.
    nokey = make_data(tmp_path, "ca")
    keys = sorted((nokey / "ca" / "keys").glob("*.pem"))
    assert keys
    for f in keys:
        f.unlink()
    p, seen, _, err = readyz_while_starting(nokey, {})
    assert 200 not in seen, seen
    assert p.returncode not in (None, 0)


def make_data(tmp_path, name):
    data = tmp_path / name
    run("init", "--trust-domain", "example.org", "--dir", data)
    return data
