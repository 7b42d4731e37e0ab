"""SVID rotation as evidence: a workload holding a Workload API stream gets its SVID
re-issued at half its life; the first issuance is recorded as `svid.issued`, each re-issue
as `svid.rotated` naming the SVID it replaced, and the report's renewal check
(`svid.renewed_before_expiry`) is decided from those rotations."""

import datetime
import json
import os
import threading
import time

from spiffe import WorkloadApiClient

from conftest import run
from envoy_harness import stop_process

TD = "example.org"
WEB = f"spiffe://{TD}/ns/prod/sa/web"
TODAY = datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def test_rotations_are_recorded_and_decide_renewed_before_expiry(tmp_path, stack):
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    proc, _, _ = esm(data)
    run("entry", "create", "--spiffe-id", WEB, "--selector", f"unix:uid:{os.getuid()}",
        "--ttl", "4s", "--dir", data)
    serials, errors = [], []
    got = threading.Event()

    def on_success(ctx):
        serials.append(ctx.default_svid.leaf.serial_number)
        if len(serials) >= 3:
            got.set()

    with WorkloadApiClient(socket_path=f"unix://{data / 'agent.sock'}", default_timeout=10) as c:
        handle = c.stream_x509_contexts(on_success, errors.append, retry_connect=False)
        try:
            assert got.wait(15), (serials, errors)
        finally:
            handle.cancel()
    assert len(set(serials)) >= 3, serials
    stop_process(proc)

    events = [json.loads(l) for l in run("audit", "tail", "-n", "1000", "--dir", data).stdout.splitlines()]
    issued = [e for e in events if e["kind"] == "svid.issued" and e["subject"] == WEB]
    rotated = [e for e in events if e["kind"] == "svid.rotated" and e["subject"] == WEB]
    assert len(issued) == 1 and len(rotated) >= 2, [e["kind"] for e in events]
    # Each rotation names the SVID it replaced: a chain from the first issuance on.
    chain = [issued[0]] + rotated
    for prev, cur in zip(chain, chain[1:]):
        assert cur["details"]["previous.serial"] == prev["details"]["serial"]
        assert cur["details"]["previous.not_after"] == prev["details"]["not_after"]
        assert cur["details"]["rotation.reason"] == "half_life"
        assert cur["actor"] == issued[0]["actor"] and cur["action"] == "rotate"

    out = tmp_path / "r.json"
    p = run("report", "--framework", "soc2", "--from", TODAY, "--to", TODAY, "--format", "json",
            "--out", out, "--dir", data, check=False)
    assert p.returncode in (0, 1), p.stderr
    doc = json.loads(out.read_text())
    renew = next(k for c in doc["controls"] for k in c["checks"] if k["id"] == "svid.renewed_before_expiry")
    assert renew["status"] == "passed", renew
    assert renew["counts"]["rotations"] == len(rotated) == renew["counts"]["renewed_in_time"]
    assert {e["seq"] for e in rotated} <= set(renew["sample"])
