"""`/metrics` through a real Envoy: the exposition parses with the Prometheus project's own
Python parser, every series the docs and older tests name is still there, and the decision
counters and latency histograms, the audit commit histogram and queue depth, the checkpoint
age and the CA's age and expiry move (or hold values that make sense) as Checks are made.
Policy hot reloads (accepted, refused while the old policy decides) and SIGHUP config
reloads (applied, unchanged, refused) are counted; a CA rotation from the CLI reaches an
SDS-fed Envoy and its push is timed."""

import json
import os
import signal
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import run
from envoy_harness import bootstrap, free_port, request, wait_for
from test_sds_envoy import SERVER, server_envoy
from test_serve_signals import edit_config

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


def issue(data, tmp_path, name, sid):
    out = tmp_path / name
    run("cert", "issue", "--spiffe-id", sid, "--out", out, "--dir", data)
    return {"cert": out / "svid.pem", "key": out / "svid.key", "ca": out / "bundle.pem"}


def front_envoy(envoy, authz, up, data, tmp_path):
    """An mTLS Envoy (as api) asking esm; returns its port and web's client certificate."""
    api = issue(data, tmp_path, "api", API)
    web = issue(data, tmp_path, "web", WEB)
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port, tls=(api["cert"], api["key"], api["ca"])))
    return port, web


def wait_sample(admin, pred, what, deadline=10):
    """Scrapes until `pred(samples)` holds; returns those samples."""
    end = time.monotonic() + deadline
    while True:
        samples, _ = scrape(admin)
        if pred(samples):
            return samples
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def replace_file(path, text):
    """Writes `text` to `path` as an editor would: a whole new file renamed into place (made
    outside the policy directory, so no poll reads it half written)."""
    tmp = path.parent.parent / f".{path.name}.new"
    tmp.write_text(text)
    os.rename(tmp, path)


def test_policy_reloads_are_counted_and_a_refused_one_leaves_the_old_policy_deciding(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    _, authz, admin = esm(data)
    port, web = front_envoy(envoy, authz, up, data, tmp_path)

    def status(method):
        return request(port, method, "/items/7", tls=web)[0]

    assert (status("GET"), status("PUT"), status("DELETE")) == (200, 403, 403)
    before, types = scrape(admin)
    assert types["esm_authz_policy_reloads"] == "counter"
    (info,) = [dict(ls) for (n, ls) in before if n == "esm_authz_policy_info"]
    served, first_hash = info["policy_set"], info["policy_hash"]

    def reloads(samples, result):
        return value(samples, "esm_authz_policy_reloads_total", policy_set=served, result=result)

    def serving(samples):
        (i,) = [dict(ls) for (n, ls) in samples if n == "esm_authz_policy_info"]
        return i["policy_hash"]

    assert reloads(before, "accepted") == reloads(before, "refused") == 0

    # A valid new version (its Rego tests still pass): web may also PUT under /items. The
    # policy watcher (a poll a second) takes it.
    policies = data / "policies"
    grants = json.loads((policies / "data.json").read_text())
    callers = grants["services"][API]["callers"]
    callers.append({"spiffe_id": WEB, "methods": ["PUT"], "path_prefixes": ["/items"]})
    replace_file(policies / "data.json", json.dumps(grants))
    after = wait_sample(admin, lambda s: reloads(s, "accepted") == 1, "the accepted reload")
    assert reloads(after, "refused") == 0
    second_hash = serving(after)
    assert second_hash != first_hash
    assert (status("GET"), status("PUT"), status("DELETE")) == (200, 200, 403)

    # A version that does not compile: refused, counted once however many polls see it,
    # and the version before keeps deciding.
    rego = (policies / "zero_trust.rego").read_text()
    replace_file(policies / "zero_trust.rego", rego + "\nallow if {\n")
    after = wait_sample(admin, lambda s: reloads(s, "refused") == 1, "the refused reload")
    assert (status("GET"), status("PUT"), status("DELETE")) == (200, 200, 403)
    time.sleep(2.5)                                    # two more polls of the same files
    after, _ = scrape(admin)
    assert (reloads(after, "accepted"), reloads(after, "refused")) == (1, 1)
    assert serving(after) == second_hash

    # A version that compiles but fails its own Rego tests (it would let web DELETE): refused
    # too. The Rego file goes back first, so no poll sees a mix it could accept.
    replace_file(policies / "zero_trust.rego", rego)
    callers.append({"spiffe_id": WEB, "methods": ["DELETE"], "path_prefixes": ["/items"]})
    replace_file(policies / "data.json", json.dumps(grants))
    after = wait_sample(admin, lambda s: reloads(s, "refused") == 2, "the second refused reload")
    assert reloads(after, "accepted") == 1 and serving(after) == second_hash
    assert (status("GET"), status("PUT"), status("DELETE")) == (200, 200, 403)
    log = next(tmp_path.glob("esm-*.log")).read_text()
    assert log.count("new policy refused; the old one keeps serving") == 2, log


def wait_until_serving(tmp_path, deadline=10):
    """SIGHUP is handled once serve is up (the SDS socket is the last thing it starts)."""
    log = next(tmp_path.glob("esm-*.log"))
    wait_for(lambda: "SDS serving" in log.read_text(), "SDS serving", deadline)


def test_sighup_config_reloads_are_counted_applied_unchanged_or_refused(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    proc, authz, admin = esm(data)
    port, web = front_envoy(envoy, authz, up, data, tmp_path)
    wait_until_serving(tmp_path)
    before, types = scrape(admin)
    assert types["esm_config_reloads"] == "counter"
    outcomes = ("applied", "unchanged", "refused")

    def reloads(samples):
        return tuple(value(samples, "esm_config_reloads_total", result=r) for r in outcomes)

    assert {dict(ls)["result"] for (n, ls) in before if n == "esm_config_reloads_total"} == set(outcomes)
    assert reloads(before) == (0, 0, 0)

    def hangup(want, what):
        proc.send_signal(signal.SIGHUP)
        return wait_sample(admin, lambda s: reloads(s) == want, what)

    # Nothing changed: the policies are re-read, nothing applied.
    hangup((0, 1, 0), "the unchanged reload")
    # Broken (a deny status outside 400..599): refused, the config in force keeps deciding.
    edit_config(data, "deny_status = 403", "deny_status = 7")
    hangup((0, 1, 1), "the refused reload")
    assert request(port, "DELETE", "/items/7", tls=web)[0] == 403
    # Valid: applied live.
    edit_config(data, "deny_status = 7", "deny_status = 418")
    hangup((1, 1, 1), "the applied reload")
    assert request(port, "DELETE", "/items/7", tls=web)[0] == 418
    # A policy-set switch installs a new version of the set: a policy reload as well.
    policy_before, _ = scrape(admin)
    edit_config(data, "dry_run = false", "dry_run = true")
    after = hangup((2, 1, 1), "the dry-run reload")
    assert (total(after, "esm_authz_policy_reloads_total", result="accepted")
            - total(policy_before, "esm_authz_policy_reloads_total", result="accepted")) == 1
    assert request(port, "DELETE", "/items/7", tls=web)[0] == 200
    assert proc.poll() is None


PUSHES = "esm_agent_sds_push_after_ca_change_seconds_count"
ROOT_LIFE = 1825 * 86400 + 30            # the default root_ttl, from a notBefore 30 s back


def sds_envoy(tmp_path, stack):
    """esm serving, and a real Envoy holding its SVID and roots over SDS. Returns the data
    dir, the admin port and `held()`: Envoy's (SVID chain serials, trusted root serials)."""
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    _, _, admin = esm(data)
    run("entry", "create", "--spiffe-id", SERVER, "--selector", f"unix:uid:{os.getuid()}", "--dir", data)
    e = envoy(server_envoy(free_port(), free_port(), up, data / "agent.sock"), node="server")

    def held():
        certs = json.loads(e.admin("/certs"))["certificates"]
        chain = tuple(c["serial_number"] for cert in certs for c in cert.get("cert_chain", []))
        roots = tuple(sorted(c["serial_number"] for cert in certs for c in cert.get("ca_cert", [])))
        return chain, roots

    wait_for(lambda: all(held()), "Envoy's SVID and roots over SDS")
    return data, admin, held


def rotate(data, *step):
    out = run("ca", "rotate", *step, "--dir", data)
    assert out.stdout.startswith("done:"), out.stdout


def test_a_ca_rotation_from_the_cli_reaches_an_sds_envoy_and_its_push_is_timed(tmp_path, stack):
    data, admin, held = sds_envoy(tmp_path, stack)
    first_made = time.time()                           # after the root's, made at init
    first = held()
    before, _ = scrape(admin)
    assert value(before, "esm_agent_open_streams") >= 1

    # The root, made at init: a sane age, and age plus time left is its lifetime.
    age = value(before, "esm_ca_root_age_seconds")
    assert 30 <= age < 30 + 600, age
    assert abs(age + value(before, "esm_ca_root_expires_in_seconds") - ROOT_LIFE) <= 2
    assert age >= value(before, "esm_ca_signing_ca_age_seconds") - 1

    # A new root is published in the bundle (`esm ca rotate` tells the server at once): the
    # stream pushes it, and the push is timed from the moment the stream saw the change.
    # (Made in a later second than the first root, so its validity differs from that one's.)
    while int(time.time()) <= int(first_made):
        time.sleep(0.05)
    told = time.monotonic()
    rotate(data, "prepare", "--root")
    after = wait_sample(admin, lambda s: value(s, PUSHES) > value(before, PUSHES), "a push after the CA change")
    wait_for(lambda: len(held()[1]) == len(first[1]) + 1, "Envoy trusting the new root too")
    assert time.monotonic() - told < 5
    took = value(after, "esm_agent_sds_push_after_ca_change_seconds_sum") - value(
        before, "esm_agent_sds_push_after_ca_change_seconds_sum")
    assert 0 <= took < 1, took
    assert value(after, "esm_agent_sds_push_after_ca_change_seconds_bucket", le="+Inf") == value(after, PUSHES)
    assert held()[0] == first[0]                       # its SVID did not change

    # The new root signs from now on: Envoy gets an SVID under it, and the new root is the
    # one whose age and expiry /metrics shows.
    rotate(data, "activate", "--root")
    wait_for(lambda: held()[0] and held()[0] != first[0], "Envoy's SVID under the new root")
    final, _ = scrape(admin)
    assert value(final, "esm_ca_root_expiry_timestamp_seconds") > value(before, "esm_ca_root_expiry_timestamp_seconds")
    new_age = value(final, "esm_ca_root_age_seconds")
    assert 30 <= new_age < age + (time.monotonic() - told), (new_age, age)
    assert abs(new_age + value(final, "esm_ca_root_expires_in_seconds") - ROOT_LIFE) <= 2


def test_an_svid_pushed_for_a_new_signing_ca_is_timed(tmp_path, stack):
    data, admin, held = sds_envoy(tmp_path, stack)
    first = held()
    rotate(data, "prepare")
    before, _ = scrape(admin)
    rotate(data, "activate")
    wait_for(lambda: held()[0] != first[0], "Envoy's SVID under the new signing CA")
    wait_sample(admin, lambda s: value(s, PUSHES) > value(before, PUSHES), "the SVID push timed", deadline=3)
