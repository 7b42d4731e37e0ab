"""Hostile local users on esm's TCP entry points, the ext_authz port and the admin
endpoints, with a real Envoy as the honest client. Another uid (nobody) opens thousands of
idle or half-spoken connections: it takes slots only from itself, esm's descriptors stay
bounded, the half-spoken connections are closed after 10 s, and Envoy's requests are still
decided throughout."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run
from envoy_harness import bootstrap, free_port, metrics, request

NOBODY = 65534

HOARDER = """
import os, socket, sys
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
socks = []
for _ in range({n}):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", {port}))
        if {first!r}:
            s.sendall({first!r})
    except OSError:
        break
    socks.append(s)
print(len(socks), flush=True)
sys.stdin.read()
"""


def hoard(port, n, first=b""):
    """A process of uid nobody holding up to `n` connections to `port`, each having sent
    `first`; returns it once they are open."""
    p = subprocess.Popen([sys.executable, "-c", HOARDER.format(uid=NOBODY, n=n, port=port, first=first)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held = int(p.stdout.readline())
    assert held == n, f"the hoarder could open only {held} connections"
    return p


def release(p):
    p.stdin.close()
    p.wait(timeout=10)


def sample(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}{{{want}}} (\S+)$", text, re.M)
    assert m, f"{name}{{{want}}} not in /metrics"
    return float(m.group(1))


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def rbac_stack(tmp_path, stack):
    if os.geteuid() != 0:
        pytest.fail("these tests act as another local user (nobody) and need root")
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", "example.org", "--dir", data)
    shutil.rmtree(data / "policies")
    shutil.copytree(ROOT / "policies" / "examples" / "rbac", data / "policies")
    proc, authz, admin = esm(data)
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port))
    return proc, authz, admin, port


def decided(port):
    """Envoy's request was allowed by the policy, so esm answered it."""
    status, _, body = request(port, "GET", "/reports/q3", {"x-role": "viewer"})
    return status == 200


def served(port, n=100):
    """The honest client's success rate and p50/p99 latency (ms) over `n` requests."""
    times, ok = [], 0
    for _ in range(n):
        t = time.perf_counter()
        ok += decided(port)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return ok / n, times[n // 2], times[int(n * 0.99) - 1]


def report(case, before, during):
    print(f"\n{case}: success {before[0]:.0%} -> {during[0]:.0%}, "
          f"p50 {before[1]:.1f} -> {during[1]:.1f} ms, p99 {before[2]:.1f} -> {during[2]:.1f} ms")


def test_thousands_of_idle_connections_from_another_user_leave_envoy_served(rbac_stack):
    proc, authz, admin, port = rbac_stack
    assert decided(port)
    baseline = served(port)
    before = open_fds(proc.pid)
    hoarder = hoard(authz, 3000, first=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    try:
        time.sleep(1)
        # nobody holds at most its quarter; esm's descriptors stay bounded.
        assert open_fds(proc.pid) < before + 512 + 20
        during = served(port)
        report("3,000 idle HTTP/2 connections", baseline, during)
        assert during[0] == 1.0
        m = metrics(admin)
        assert sample(m, "esm_listener_refused_total", listener="ext_authz", limit="peer") >= 3000 - 512
        assert sample(m, "esm_listener_connections", listener="ext_authz") <= 512 + 10
    finally:
        release(hoarder)
    time.sleep(1)
    assert sample(metrics(admin), "esm_listener_connections", listener="ext_authz") <= 10
    assert decided(port)


def test_half_spoken_connections_are_closed_and_their_slots_freed(rbac_stack):
    proc, authz, admin, port = rbac_stack
    assert decided(port)
    baseline = served(port)
    before = open_fds(proc.pid)
    grpc = hoard(authz, 400, first=b"PRI * HT")               # a third of a preface
    http = hoard(admin, 60, first=b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never ends
    try:
        during = served(port)
        report("400 half-sent prefaces + 60 unfinished admin requests", baseline, during)
        assert during[0] == 1.0
        assert metrics(admin)  # root's scrape gets its own slot
        time.sleep(12)
        m = metrics(admin)
        assert sample(m, "esm_listener_stalled_total", listener="ext_authz") >= 400
        assert sample(m, "esm_listener_connections", listener="ext_authz") <= 10
        assert sample(m, "esm_listener_connections", listener="admin") <= 2
        assert open_fds(proc.pid) <= before + 10
        assert decided(port)
    finally:
        release(grpc)
        release(http)
