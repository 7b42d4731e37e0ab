"""`esm serve` and SIGTERM under load: with Envoys holding SDS streams and requests being
decided by concurrent callers, SIGTERM makes esm exit within a bound, and every decision
whose answer reached a caller is in the audit log, found by the request's own
x-request-id with the outcome the caller saw; the log verifies (a final checkpoint covers
its tail)."""

import json
import os
import shutil
import signal
import threading
import time
import uuid

from conftest import run
from envoy_harness import bootstrap, free_port, request
from test_sds_envoy import SERVER, server_envoy

TD = "example.org"
API = f"spiffe://{TD}/ns/prod/sa/api"
WEB = f"spiffe://{TD}/ns/prod/sa/web"
# What the systemd unit and the DaemonSet give esm before SIGKILL is 30 s; esm must be
# well inside it.
STOP_BOUND = 10.0


def issue(data, spiffe_id, out):
    run("cert", "issue", "--spiffe-id", spiffe_id, "--out", out, "--dir", data)
    return {"cert": out / "svid.pem", "key": out / "svid.key", "ca": out / "bundle.pem"}


def test_sigterm_under_load_loses_no_answered_decision_and_exits_in_time(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    api, web = issue(data, API, tmp_path / "api"), issue(data, WEB, tmp_path / "web")
    proc, authz, _ = esm(data)
    # An Envoy with open SDS streams (certificate and roots) while esm stops.
    run("entry", "create", "--spiffe-id", SERVER, "--selector", f"unix:uid:{os.getuid()}", "--dir", data)
    sds_envoy = envoy(server_envoy(free_port(), free_port(), up, data / "agent.sock"), node="sds")
    assert SERVER in sds_envoy.admin("/certs")
    port = free_port()
    cfg = bootstrap(free_port(), authz, up, http_port=port, tls=(api["cert"], api["key"], api["ca"]))
    # Envoy's own answer when esm cannot be asked is 503 here (default 403): a 403 is then
    # always esm's decision.
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"][0]["typed_config"]["status_on_error"] = {"code": "ServiceUnavailable"}
    # The callers' x-request-id reaches esm unchanged: each answer is matched to its record.
    hcm["preserve_external_request_id"] = True
    envoy(cfg)
    first = f"first-{uuid.uuid4()}"
    assert request(port, "GET", "/items/1", headers={"x-request-id": first}, tls=web)[0] == 200

    # request id -> the outcome its caller was told; only answers that came from esm.
    answered = {first: "allow"}
    lock, stop = threading.Lock(), threading.Event()

    def load():
        while not stop.is_set():
            for path, want, outcome in (("/items/x", 200, "allow"), ("/admin", 403, "deny")):
                rid = str(uuid.uuid4())
                try:
                    status = request(port, "GET", path, headers={"x-request-id": rid}, tls=web)[0]
                except OSError:
                    continue
                # 503 is Envoy's own answer once esm is gone (fail closed): no decision.
                if status == want:
                    with lock:
                        answered[rid] = outcome

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert code == 0
    assert took < STOP_BOUND, f"esm took {took:.1f}s to stop"
    told = list(answered.values())
    assert told.count("allow") > 20 and told.count("deny") > 20, (told.count("allow"), told.count("deny"))

    events = [json.loads(line) for line in
              run("audit", "tail", "-n", "1000000", "--json", "--dir", data).stdout.splitlines()]
    recorded = {}
    for e in events:
        if e["kind"] == "authz.decision":
            assert e["correlation_id"] not in recorded, f"two records for {e['correlation_id']}"
            recorded[e["correlation_id"]] = e["outcome"]
    # Every answer a caller got is recorded, under its id, with the outcome it was told. A
    # decision can be recorded and its answer not reach the caller (esm stopped in
    # between), never the reverse.
    lost = sorted(rid for rid in answered if rid not in recorded)
    assert not lost, f"{len(lost)} of {len(answered)} answered decisions missing, e.g. {lost[:3]}"
    wrong = sorted(rid for rid, outcome in answered.items() if recorded[rid] != outcome)
    assert not wrong, f"recorded with another outcome than answered: {wrong[:3]}"
    verify = run("audit", "verify", "--dir", data)
    assert verify.stdout.startswith("ok:")
    # The final checkpoint covers the last event.
    last = events[-1]["seq"]
    assert f"1..{last} verify" in verify.stdout, (last, verify.stdout)


def audit_events(data):
    """Read through a copy of the config as esm started with it: esm.toml may be broken now."""
    good = data / "esm-as-started.toml"
    if not good.exists():
        shutil.copy(data / "esm.toml", good)
    return [json.loads(l) for l in
            run("audit", "tail", "-n", "100000", "--config", good).stdout.splitlines()]


def wait_event(data, pred, what, deadline=10):
    end = time.time() + deadline
    while time.time() < end:
        hits = [e for e in audit_events(data) if pred(e)]
        if hits:
            return hits[-1]
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def edit_config(data, old, new):
    """Rewrites esm.toml as an editor would (a new file renamed into place)."""
    path = data / "esm.toml"
    text = path.read_text()
    assert old in text, old
    tmp = data / "esm.toml.new"
    tmp.write_text(text.replace(old, new, 1))
    os.rename(tmp, path)


def unauthenticated_envoy(envoy, authz, up):
    """An Envoy whose callers present no certificate: the default policy denies them. Its
    own answer when esm cannot be asked is 503, so any other status is esm's decision."""
    port = free_port()
    cfg = bootstrap(free_port(), authz, up, http_port=port)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"][0]["typed_config"]["status_on_error"] = {"code": "ServiceUnavailable"}
    envoy(cfg)
    return port


def test_sighup_with_a_broken_config_keeps_the_old_one_and_a_valid_one_applies(tmp_path, stack):
    """SIGHUP re-reads esm.toml. A broken one is refused (logged with file, key and what was
    expected; audited as config.changed failure) and decisions go on under the old config. A
    valid one applies its authz settings and policy-set switches live, lists the keys that
    wait for a restart, and is audited with the old and new config hash."""
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    proc, authz, _ = esm(data)
    audit_events(data)
    port = unauthenticated_envoy(envoy, authz, up)
    assert request(port, "GET", "/items/1")[0] == 403

    # Broken: a deny status outside 400..599.
    edit_config(data, "deny_status = 403", "deny_status = 7")
    proc.send_signal(signal.SIGHUP)
    refused = wait_event(data, lambda e: e["kind"] == "config.changed", "the refused reload")
    assert refused["outcome"] == "failure" and refused["action"] == "refuse"
    assert str(data / "esm.toml") in refused["reason"]
    assert "authz.deny_status = 7: expected 400..599" in refused["reason"]
    assert refused["actor"] == f"uid:{os.getuid()}"
    assert proc.poll() is None
    assert request(port, "GET", "/items/1")[0] == 403          # the old config still decides
    log = next(tmp_path.glob("esm-*.log")).read_text()
    assert "esm.toml refused" in log and "authz.deny_status = 7" in log

    # Valid: a live authz setting and a key that waits for a restart.
    edit_config(data, "deny_status = 7", "deny_status = 418")
    edit_config(data, "writer_nice = 10", "writer_nice = 5")
    proc.send_signal(signal.SIGHUP)
    applied = wait_event(data, lambda e: e["kind"] == "config.changed" and e["outcome"] == "success",
                         "the applied reload")
    d = applied["details"]
    assert d["applied"] == ["authz.deny_status"] and d["restart"] == ["audit.writer_nice"]
    assert d["changed"] == ["audit.writer_nice", "authz.deny_status"]
    assert d["previous.hash"] != d["config.hash"] and len(d["config.hash"]) == 64
    assert d["changed.via"] == "esm:config-reload" and applied["actor"] == f"uid:{os.getuid()}"
    assert request(port, "GET", "/items/1")[0] == 418
    assert "takes effect at restart" in next(tmp_path.glob("esm-*.log")).read_text()

    # A policy-set switch: the default set in dry-run allows what its policy denies.
    edit_config(data, "dry_run = false", "dry_run = true")
    proc.send_signal(signal.SIGHUP)
    wait_event(data, lambda e: e["kind"] == "config.changed" and e["outcome"] == "success"
               and e["details"]["applied"] == ["authz.dry_run"], "the dry-run reload")
    changed = [e for e in audit_events(data) if e["kind"] == "policy.changed"]
    assert changed and changed[-1]["details"]["changed.via"] == "esm:config-reload"
    assert changed[-1]["details"]["dry_run"] is True and changed[-1]["details"]["policy.hash"]
    assert request(port, "GET", "/items/1")[0] == 200
    wait_event(data, lambda e: e["kind"] == "authz.decision" and e["details"].get("dry_run") is True,
               "the dry-run decision")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_BOUND) == 0
    assert run("audit", "verify", "--dir", data).stdout.startswith("ok:")


def test_sighup_rereads_the_policies_at_once(tmp_path, stack):
    """A policy change followed by SIGHUP is in force when the signal has been handled, not
    at the next poll; esm keeps serving and still stops cleanly on SIGTERM."""
    import urllib.request

    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    proc, _, admin = esm(data)
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None, "esm ended on SIGHUP"
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5) as r:
        assert r.status == 200
    # Nothing changed: no config.changed event.
    assert not [e for e in audit_events(data) if e["kind"] == "config.changed"]
    grants = json.loads((data / "policies" / "data.json").read_text())
    grants["services"][f"spiffe://{TD}/ns/prod/sa/db"] = {"callers": [{"spiffe_id": API}]}
    (data / "policies" / "data.json").write_text(json.dumps(grants))
    proc.send_signal(signal.SIGHUP)
    reload = wait_event(data, lambda e: e["kind"] == "policy.changed", "the policy reload", deadline=10)
    assert reload["outcome"] == "success" and reload["actor"] == f"uid:{os.getuid()}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_BOUND) == 0
    run("audit", "verify", "--dir", data)
