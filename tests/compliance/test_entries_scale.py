"""Registration entries at fleet scale, on SQLite and on PostgreSQL: 100,000 entries (each
a distinct SPIFFE ID with a `unix:uid:N` selector) go in through `esm entry import`,
`esm entry list` prints all of them, a second import adds nothing, and a workload matching
one entry gets its SVID over the Workload API (py-spiffe) and over SDS (a real Envoy, whose
bootstrap has only esm's agent socket as its SDS cluster). The figures (import time,
Workload API fetch time, time until the Envoy is ready with its SDS certificate, esm serve
RSS with the entries loaded) are printed with -s."""

import json
import os
import secrets
import subprocess
import time

import pytest
from spiffe import WorkloadApiClient

from conftest import run
from envoy_harness import cert_uris, free_port, stop_process, wait_path
from test_sds_envoy import server_envoy

TD = "example.org"
N = 100_000
PG_URL = os.environ.get("ESM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
# The bulk commands' bound: the figures are printed, the targets are the bench's; on a
# loaded machine (a debug build, PostgreSQL) an import of 100,000 can pass 60 s.
BULK_TIMEOUT = 300


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def entries_file(path, me):
    """N entries, one of them for this process's uid."""
    uids = list(range(N))
    if me >= N:
        uids[-1] = me
    with open(path, "w") as f:
        for uid in uids:
            f.write(json.dumps({"spiffe_id": f"spiffe://{TD}/fleet/w{uid}",
                                "selectors": [f"unix:uid:{uid}"]}) + "\n")


def fetch_when_up(sock, limit=30):
    """The SVID, once the agent socket answers (it opens after the entries are loaded)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            with WorkloadApiClient(socket_path=sock, default_timeout=10) as c:
                return c.fetch_x509_svid()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    if request.param == "sqlite":
        yield {}
        return
    schema = "esm_entries_" + secrets.token_hex(5)
    yield {"ESM_AUDIT_URL": PG_URL, "ESM_AUDIT_SCHEMA": schema}
    subprocess.run(["psql", PG_URL, "-q", "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                   capture_output=True, check=False, timeout=60)


def test_100000_entries_import_list_and_serve_one_workload(tmp_path, stack, backend):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data, env=backend)
    serve, _, _ = esm(data, env=backend)
    wait_path(data / "admin.sock", serve)
    me = os.getuid()
    f = tmp_path / "entries.jsonl"
    entries_file(f, me)
    rss_before = rss_mib(serve.pid)

    t0 = time.monotonic()
    p = run("entry", "import", f, "--dir", data, env=backend, timeout=BULK_TIMEOUT)
    imported_s = time.monotonic() - t0
    assert f"imported {N} entries (0 already present)" in p.stderr, p.stderr
    assert p.stdout == ""

    t0 = time.monotonic()
    p = run("entry", "list", "--dir", data, env=backend, timeout=BULK_TIMEOUT)
    listed_s = time.monotonic() - t0
    listed = [json.loads(l) for l in p.stdout.splitlines()]
    assert len(listed) == N
    assert len({e["spiffe_id"] for e in listed}) == N
    assert len({e["id"] for e in listed}) == N

    # What `list` printed goes back in unchanged: nothing is added or duplicated.
    again = tmp_path / "listed.jsonl"
    again.write_text(p.stdout)
    p = run("entry", "import", again, "--dir", data, env=backend, timeout=BULK_TIMEOUT)
    assert f"imported 0 entries ({N} already present)" in p.stderr, p.stderr

    uid_entry = f"spiffe://{TD}/fleet/w{me}"
    sock = f"unix://{data / 'agent.sock'}"
    t0 = time.monotonic()
    with WorkloadApiClient(socket_path=sock, default_timeout=10) as c:
        svid = c.fetch_x509_svid()
    fetch_ms = (time.monotonic() - t0) * 1000
    assert str(svid.spiffe_id) == uid_entry

    rss_after_import = rss_mib(serve.pid)

    # A server started on the store: the 100,000 entries loaded and served from the start.
    stop_process(serve)
    serve, _, _ = esm(data, env=backend)
    assert str(fetch_when_up(sock).spiffe_id) == uid_entry
    rss = rss_mib(serve.pid)

    # SDS: an Envoy of this uid (so the same entry matches it) whose TLS listener is fed
    # only by esm. Envoy reports ready once esm has sent the certificate and the roots.
    t0 = time.monotonic()
    sds_envoy = envoy(server_envoy(free_port(), free_port(), up, data / "agent.sock"), node="fleet")
    sds_s = time.monotonic() - t0
    assert uid_entry in cert_uris(sds_envoy), sds_envoy.admin("/certs")
    sds_envoy.stop()
    print(f"\n[{'postgres' if backend else 'sqlite'}] import {N}: {imported_s:.1f} s, "
          f"list: {listed_s:.1f} s, Workload API fetch: {fetch_ms:.0f} ms, Envoy ready over "
          f"SDS: {sds_s:.1f} s, esm serve RSS "
          f"{rss_before:.0f} MiB empty, {rss_after_import:.0f} MiB after the import, "
          f"{rss:.0f} MiB started with the entries")
    assert rss <= 150, f"esm serve RSS {rss:.0f} MiB with {N} entries"
