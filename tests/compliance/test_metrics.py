"""`/metrics` through a real Envoy: the exposition parses with the Prometheus project's own
Python parser, every series the docs and older tests name is still there, and the decision
counters and latency histograms, the audit commit histogram and queue depth, the checkpoint
age and the CA's age and expiry move (or hold values that make sense) as Checks are made."""

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import run
from envoy_harness import bootstrap, free_port, request

TD = "example.org"
API = f"spiffe://{TD}/ns/prod/sa/api"
WEB = f"spiffe://{TD}/ns/prod/sa/web"

# Series that existed before the move to prometheus-client (names and label keys).
KEPT = {
    "esm_build_info": {"version"},
    "esm_ca_signing_ca_expiry_timestamp_seconds": set(),
    "esm_ca_root_expiry_timestamp_seconds": set(),
    "esm_ca_bundle_sequence": set(),
    "esm_ca_bundle_roots": set(),
    "esm_ca_authorities": {"status"},
    "esm_audit_events_appended_total": set(),
    "esm_audit_events_dropped_total": set(),
    "esm_audit_batches_total": set(),
    "esm_audit_batches_failed_total": set(),
    "esm_audit_batches_retried_total": set(),
    "esm_audit_events_abandoned_total": set(),
    "esm_audit_checkpoints_total": set(),
    "esm_audit_checkpoints_failed_total": set(),
    "esm_audit_store_up": set(),
    "esm_audit_last_seq": set(),
    "esm_authz_decisions_total": {"result"},
    "esm_authz_dry_run_would_deny_total": set(),
    "esm_authz_decision_seconds_total": set(),
    "esm_authz_memoized_total": set(),
    "esm_authz_evaluations_total": {"engine"},
    "esm_authz_rvm_rechecked_total": set(),
    "esm_agent_open_streams": set(),
    "esm_agent_svids_issued_total": set(),
    "esm_agent_issuance_failures_total": set(),
    "esm_agent_responses_total": {"result"},
    "esm_listener_connections": {"listener"},
    "esm_listener_accepted_total": {"listener"},
    "esm_listener_stalled_total": {"listener"},
    "esm_listener_refused_total": {"listener", "limit"},
}


def scrape(admin):
    """Every sample by (name, sorted labels), and each family's type, as the parser sees them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name, **labels):
    """The sum over every sample of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


def test_metrics_parse_and_move_as_checks_are_made(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    svids = {}
    for name, sid in (("api", API), ("web", WEB)):
        out = tmp_path / name
        run("cert", "issue", "--spiffe-id", sid, "--out", out, "--dir", data)
        svids[name] = {"cert": out / "svid.pem", "key": out / "svid.key", "ca": out / "bundle.pem"}
    # A checkpoint once a second: the decisions below bring one.
    _, authz, admin = esm(data, {"ESM_AUDIT_CHECKPOINT_INTERVAL": "1s"})
    port = free_port()
    api = svids["api"]
    envoy(bootstrap(free_port(), authz, up, http_port=port, tls=(api["cert"], api["key"], api["ca"])))
    before, types = scrape(admin)

    for name, labels in KEPT.items():
        found = [ls for (n, ls) in before if n == name]
        assert found, f"{name} is missing from /metrics"
        assert all({k for k, _ in ls} == labels for ls in found), (name, found)
    for name in ("esm_authz_decision_latency_seconds", "esm_audit_commit_latency_seconds",
                 "esm_agent_sds_push_after_ca_change_seconds"):
        assert types[name] == "histogram", name
    assert types["esm_authz_decisions"] == "counter"

    # The CA: the signing CA was made at init, seconds ago, and expires in the future.
    assert 0 <= value(before, "esm_ca_signing_ca_age_seconds") < 3600
    assert value(before, "esm_ca_signing_ca_expires_in_seconds") > 3600
    assert value(before, "esm_ca_root_expires_in_seconds") > value(before, "esm_ca_signing_ca_expires_in_seconds")
    assert value(before, "esm_audit_queue_capacity") > 0
    assert value(before, "esm_audit_queue_depth") <= value(before, "esm_audit_queue_capacity")

    allowed, denied = 3, 2
    for _ in range(allowed):
        assert request(port, "GET", "/items/7", tls=svids["web"])[0] == 200
    for _ in range(denied):
        assert request(port, "DELETE", "/items/7", tls=svids["web"])[0] == 403
    deadline = time.monotonic() + 10
    while True:
        after, _ = scrape(admin)
        committed = value(after, "esm_audit_events_appended_total") - value(before, "esm_audit_events_appended_total")
        signed = value(after, "esm_audit_checkpoints_total") >= 1
        if (committed >= allowed + denied and signed) or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    def moved(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("esm_authz_decisions_total", result="allow") == allowed
    assert moved("esm_authz_decisions_total", result="deny") == denied
    # The latency histogram counts each decision once, under its served set and result.
    assert moved("esm_authz_decision_latency_seconds_count", result="allow") == allowed
    assert moved("esm_authz_decision_latency_seconds_count", result="deny") == denied
    assert moved("esm_authz_decision_latency_seconds_bucket", result="allow", le="+Inf") == allowed
    assert moved("esm_authz_decision_latency_seconds_count", policy_set="") == 0
    sets = {dict(ls)["policy_set"] for (n, ls), v in after.items()
            if n == "esm_authz_decision_latency_seconds_count" and v > 0}
    assert len(sets) == 1 and "" not in sets, sets
    assert moved("esm_authz_decision_latency_seconds_sum") > 0
    # Buckets are cumulative: each `le` holds at least as many as the one below it.
    (served,) = sets
    buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in after.items()
                     if n == "esm_authz_decision_latency_seconds_bucket"
                     and dict(ls)["policy_set"] == served and dict(ls)["result"] == "allow")
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets
    # Their records were committed, and each transaction was timed.
    assert committed >= allowed + denied
    assert moved("esm_audit_commit_latency_seconds_count") >= 1
    assert moved("esm_audit_commit_latency_seconds_count") == moved("esm_audit_batches_total")
    assert moved("esm_audit_commit_latency_seconds_sum") > 0

    # The checkpoint that covers them is recent, and its age and time agree.
    age = value(after, "esm_audit_checkpoint_age_seconds")
    assert 0 <= age < 30, age
    stamp = value(after, "esm_audit_last_checkpoint_timestamp_seconds")
    assert abs(time.time() - age - stamp) < 5
