"""Hostile local users on esm's entry points, each with an unmodified honest client: a real
Envoy on the ext_authz port and the admin endpoints, py-spiffe on the agent socket. Another
uid (nobody) opens thousands of idle or half-spoken connections: it takes slots only from
itself, esm's descriptors stay bounded, the half-spoken connections are closed after 10 s,
and the honest client is served throughout. On the agent socket nobody also has an entry of
its own and opens every stream it may without reading a byte, and on the ext_authz port it
sends a Check on every stream it may and reads no answer: esm's memory stays bounded."""

import functools
import os
import pathlib
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from spiffe import WorkloadApiClient

from agent_peer import PREFACE
from conftest import ROOT, run
from envoy_harness import bootstrap, free_port, metrics, request, wait_for, wait_path

NOBODY = 65534

HOARDER = """
import os, socket, sys, time
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
socks = []
for _ in range({n}):
    s = socket.socket({family})
    try:
        s.connect({addr!r})
    except OSError:
        break
    try:
        s.sendall({first!r})
    except OSError:
        pass  # refused at a limit: a Unix socket tells at once, TCP on a later send
    socks.append(s)
print(len(socks), flush=True)
for b in {drip!r}:  # then one more byte a second, a slow client's
    time.sleep(1)
    for s in socks:
        try:
            s.send(bytes([b]))
        except OSError:
            pass
sys.stdin.read()
"""


def as_nobody(script, **kw):
    """A Python process of uid nobody running `script`; returns it with the first line it
    printed (once it has done its work), failing after 120 s."""
    p = subprocess.Popen([sys.executable, "-c", script.format(uid=NOBODY, **kw)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if not select.select([p.stdout], [], [], 120)[0]:
        release(p)
        raise AssertionError("the process of uid nobody did not get its connections open")
    return p, p.stdout.readline()


def hoard(target, n, first=b"", drip=b""):
    """A process of uid nobody holding up to `n` connections to `target` (a TCP port on
    loopback or a Unix socket path), each having sent `first` and then `drip` a byte a
    second; returns it once they are open."""
    unix = not isinstance(target, int)
    p, line = as_nobody(HOARDER, n=n, first=first, drip=drip,
                        family="socket.AF_UNIX" if unix else "socket.AF_INET",
                        addr=str(target) if unix else ("127.0.0.1", target))
    if line.strip() != str(n):
        release(p)
        raise AssertionError(f"the hoarder could open only {line!r} connections")
    return p


def release(p):
    """Ends a process of uid nobody (and so its connections): at once if still at work."""
    p.stdin.close()
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)


def sample(text, name, **labels):
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    m = re.search(rf"^{re.escape(want)} (\S+)$", text, re.M)
    assert m, f"{want} not in /metrics"
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


def served(probe, n=100):
    """The honest client's success rate and p50/p99 latency (ms) over `n` calls of `probe`."""
    times, ok = [], 0
    for _ in range(n):
        t = time.perf_counter()
        ok += probe()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return ok / n, times[n // 2], times[int(n * 0.99) - 1]


def report(case, before, during):
    print(f"\n{case}: success {before[0]:.0%} -> {during[0]:.0%}, "
          f"p50 {before[1]:.1f} -> {during[1]:.1f} ms, p99 {before[2]:.1f} -> {during[2]:.1f} ms")


def test_thousands_of_idle_connections_from_another_user_leave_envoy_served(rbac_stack):
    proc, authz, admin, port = rbac_stack
    assert decided(port)
    baseline = served(functools.partial(decided, port))
    before = open_fds(proc.pid)
    hoarder = hoard(authz, 3000, first=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    try:
        time.sleep(1)
        # nobody holds at most its quarter; esm's descriptors stay bounded.
        assert open_fds(proc.pid) < before + 512 + 20
        during = served(functools.partial(decided, port))
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
    baseline = served(functools.partial(decided, port))
    before = open_fds(proc.pid)
    grpc = hoard(authz, 400, first=b"PRI * HT")               # a third of a preface
    http = hoard(admin, 60, first=b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never ends
    try:
        during = served(functools.partial(decided, port))
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


# The agent socket: SDS and the SPIFFE Workload API, with py-spiffe as the honest client.

AUTHZ_STREAMS = 256  # authz/src/service.rs MAX_STREAMS_PER_CONNECTION


def test_checks_sent_and_never_read_on_the_ext_authz_port_leave_envoy_served(rbac_stack):
    """Another uid opens its 512 connections to the ext_authz port, sends a Check on every
    stream each may hold, and never reads an answer: 131,072 decisions esm makes (and
    audits) and cannot deliver. Envoy is still decided throughout, and esm's memory is
    bounded by the connection and stream limits (HTTP/2 keeps each unread answer's stream
    until it is written)."""
    proc, authz, admin, port = rbac_stack
    assert decided(port)
    probe = functools.partial(decided, port)
    baseline = served(probe)
    rss = [rss_mib(proc.pid)]
    conns = 512
    checker, line = as_nobody(CHECKER, here=str(pathlib.Path(__file__).parent), port=authz,
                              conns=conns, streams=AUTHZ_STREAMS)
    try:
        assert line.strip() == str(conns), f"the checker opened {line!r} connections"
        during = served(probe)
        time.sleep(5)
        rss.append(rss_mib(proc.pid))
        after = served(probe)
        report(f"{conns * AUTHZ_STREAMS:,} unread Checks on the ext_authz port, as they arrive", baseline, during)
        report(f"{conns * AUTHZ_STREAMS:,} unread Checks on the ext_authz port, held", baseline, after)
        print(f"esm's RSS: {rss[0]:.0f} MiB -> {rss[1]:.0f} MiB")
        assert during[0] >= 0.95 and after[0] == 1.0
        assert max(rss) - rss[0] < 512  # about 270 MiB measured
    finally:
        release(checker)
    assert decided(port)


TD = "example.org"
WEB = f"spiffe://{TD}/ns/prod/sa/web"
MAX_STREAMS = 200  # agent/src/server.rs: streams one connection may hold open
BUDGET = 1024  # agent/src/connection_limits.rs: streams one uid may hold open

# Each connection: SDS StreamSecrets and Workload API FetchX509SVID calls by turns, each an
# empty request message; the SDS ones stay open from the client's side. Nothing is read.
CHECKER = """
import os, socket, sys
sys.path.insert(0, {here!r})
from agent_peer import DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, SETTINGS, frame, literal
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
FIELDS = [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"),
          (":path", "/envoy.service.auth.v3.Authorization/Check"),
          ("content-type", "application/grpc"), ("te", "trailers")]
BLOCK = b"".join(literal(k, v) for k, v in FIELDS)
socks = []
for _ in range({conns}):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", {port}))
        s.sendall(PREFACE + frame(SETTINGS, 0, 0) + b"".join(
            frame(HEADERS, END_HEADERS, 2 * i + 1, BLOCK) + frame(DATA, END_STREAM, 2 * i + 1, bytes(5))
            for i in range({streams})))
    except OSError:
        break
    socks.append(s)
print(len(socks), flush=True)
sys.stdin.read()
"""


STREAMER = """
import os, socket, sys
sys.path.insert(0, {here!r})
from agent_peer import DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, RPCS, SDS, SETTINGS, frame, literal
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
CALLS = [(SDS.replace("FetchSecrets", "StreamSecrets"), [], 0), (*RPCS["workload"][:2], END_STREAM)]

def opened(stream, path, extra, end):
    fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
              ("content-type", "application/grpc"), ("te", "trailers"), *extra]
    block = b"".join(literal(k, v) for k, v in fields)
    return frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, end, stream, bytes(5))

socks = []
for _ in range({conns}):
    s = socket.socket(socket.AF_UNIX)
    s.connect({path!r})
    s.sendall(PREFACE + frame(SETTINGS, 0, 0) +
              b"".join(opened(2 * i + 1, *CALLS[i % 2]) for i in range({streams})))
    socks.append(s)
print(len(socks), flush=True)
sys.stdin.read()
"""


def rss_mib(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M).group(1)) / 1024


def open_streams(admin):
    """esm's open SDS streams; -1 while /metrics does not answer within 5 s."""
    try:
        return sample(metrics(admin), "esm_agent_open_streams")
    except OSError:
        return -1


def refused_streams(admin):
    """Agent socket calls esm refused for their uid's stream budget; -1 without /metrics."""
    try:
        return sample(metrics(admin), "esm_agent_streams_refused_total")
    except OSError:
        return -1


def fetched(sock):
    """py-spiffe, unmodified, on a new connection got this process's SVID within 5 s."""
    try:
        with WorkloadApiClient(socket_path=f"unix://{sock}", default_timeout=5) as c:
            return str(c.fetch_x509_svid().spiffe_id) == WEB
    except Exception:  # whatever py-spiffe raises, the call failed
        return False


@pytest.fixture
def agent_stack(tmp_path, stack):
    """esm with its agent socket in a directory nobody can reach, and an entry for this
    process's uid; yields (esm's process, socket path, admin port, data dir, esm's log)."""
    if os.geteuid() != 0:
        pytest.fail("these tests act as another local user (nobody) and need root")
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    shared = pathlib.Path(tempfile.mkdtemp(prefix="esm-hostile-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        sock = shared / "agent.sock"
        proc, _, admin = esm(data, env={"ESM_AGENT_SOCKET": str(sock)})
        wait_path(sock, proc)
        run("entry", "create", "--spiffe-id", WEB, "--selector", f"unix:uid:{os.getuid()}", "--dir", data)
        assert fetched(sock)
        yield proc, sock, admin, data, tmp_path / f"esm-{admin}.log"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_py_spiffe_connecting_anew_more_times_than_its_uid_cap_stays_served(agent_stack):
    """A client that closes its connection gives its slot back: a SPIFFE library making a
    new connection per fetch is served past the 256 its uid may hold at once, and esm's
    descriptors come back to where they were."""
    proc, sock, _, _, _ = agent_stack
    before = open_fds(proc.pid)
    ok = [fetched(sock) for _ in range(300)]
    assert all(ok), f"fetch {ok.index(False) + 1} of 300 failed, {ok.count(False)} in all"
    wait_for(lambda: open_fds(proc.pid) <= before + 5,
             f"py-spiffe's closed connections given back ({before} -> {open_fds(proc.pid)} descriptors)")


def test_idle_and_slow_connections_to_the_agent_socket_leave_py_spiffe_served(agent_stack):
    """nobody dribbles a preface a byte a second on 100 connections and holds 3,000 idle
    ones: it gets its 256 slots and no more, the dribblers are closed 10 s after connecting
    (the stall counts from the connect, not from the last byte), and py-spiffe, another
    uid, gets its SVID throughout."""
    proc, sock, _, _, log = agent_stack
    baseline = served(functools.partial(fetched, sock))
    before = open_fds(proc.pid)
    slow = hoard(sock, 100, first=PREFACE[:8], drip=PREFACE[8:])
    idle = hoard(sock, 3000, first=PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    try:
        time.sleep(1)
        held = open_fds(proc.pid)
        # Each connection holds its socket and a pidfd pinning the peer process.
        assert held < before + 2 * 256 + 20, f"{held - before} descriptors more for nobody's 256"
        during = served(functools.partial(fetched, sock))
        report("3,000 idle + 100 dribbling connections on agent.sock", baseline, during)
        assert during[0] == 1.0
        assert "agent socket full: connection refused" in log.read_text()
        wait_for(lambda: log.read_text().count("stalled for 10s") >= 100, "the dribblers closed", 15)
        after = open_fds(proc.pid)
        print(f"esm's descriptors: {before} -> {held} with nobody's -> {after} once stalled")
        assert after <= held - 2 * 100 + 5, "the dribblers' (or py-spiffe's) descriptors were kept"
    finally:
        release(idle)
        release(slow)
    wait_for(lambda: open_fds(proc.pid) <= before + 5,
             f"nobody's slots given back ({before} -> {open_fds(proc.pid)} descriptors)")
    assert fetched(sock)


def test_streams_opened_and_never_read_are_held_to_the_uids_budget_and_py_spiffe_served(agent_stack):
    """A compromised workload (nobody, with an entry of its own) opens its 256 connections,
    each with every stream it may (half SDS StreamSecrets, half Workload API FetchX509SVID),
    and never reads a byte. Without a bound, esm would hold an answer in each of the 51,200
    (about 12 KiB a stream: 600 MiB) and spend its cores opening them. The uid's stream
    budget (1024) refuses the rest at once. py-spiffe, another uid, gets its SVID while nobody
    holds its budget; during the burst of 50,176 refusals, which both cores share, it may
    miss one call in 20. What stays in memory is the 1024 answers and the refusals nobody
    reads (HTTP/2 keeps a stream's place until its last frame is written, so those are
    bounded too, by 200 per connection): about 120 MiB, against 610 MiB before the budget."""
    proc, sock, admin, data, _ = agent_stack
    run("entry", "create", "--spiffe-id", f"spiffe://{TD}/ns/prod/sa/compromised",
        "--selector", f"unix:uid:{NOBODY}", "--dir", data)
    probe = functools.partial(fetched, sock)
    baseline = served(probe)
    rss = [rss_mib(proc.pid)]
    conns, streams = 256, 256 * MAX_STREAMS
    streamer, line = as_nobody(STREAMER, here=str(pathlib.Path(__file__).parent), path=str(sock),
                               conns=conns, streams=MAX_STREAMS)
    try:
        assert line.strip() == str(conns), f"the streamer opened {line!r} connections"
        opening = served(probe)
        wait_for(lambda: refused_streams(admin) >= streams - BUDGET, "nobody's streams over its budget refused", 180)
        rss.append(rss_mib(proc.pid))
        held = served(probe)
        rss.append(rss_mib(proc.pid))
        report(f"{streams:,} unread streams on agent.sock, while esm refuses them", baseline, opening)
        report(f"{streams:,} unread streams on agent.sock, {BUDGET} held", baseline, held)
        print(f"esm's RSS: {rss[0]:.0f} MiB -> {rss[1]:.0f} MiB with the budget held "
              f"-> {rss[2]:.0f} MiB after py-spiffe's calls")
        assert opening[0] >= 0.95 and held[0] == 1.0
        assert 0 < open_streams(admin) <= BUDGET
        assert refused_streams(admin) <= streams - open_streams(admin)
        assert max(rss) - rss[0] < 200, "memory grew past the budget and the unread refusals"
    finally:
        release(streamer)
    wait_for(lambda: open_streams(admin) == 0, "nobody's streams closed once it exited")
    assert fetched(sock)
