"""Evidence under faults, with a real Envoy asking esm for every request: a full disk under
the data dir, PostgreSQL restarts, and `kill -9` in `sync` mode. Every request the client
saw allowed must have its `authz.decision` record (matched by x-request-id), and the chain
must verify afterwards."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
import uuid

from conftest import ESM, run
from envoy_harness import Envoy, bootstrap, free_port, request, stop_process, wait_port

TD = "example.org"
ALLOW_ALL = "package envoy.authz\nimport rego.v1\ndefault allow := true\n"
PG_URL = os.environ.get("ESM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def init(data):
    run("init", "--trust-domain", TD, "--dir", data)
    shutil.rmtree(data / "policies")
    (data / "policies").mkdir()
    (data / "policies" / "allow.rego").write_text(ALLOW_ALL)


class Esm:
    """`esm serve` on fixed ports, so it can be killed and started again behind one Envoy."""

    def __init__(self, tmp, data, env=None):
        self.tmp, self.data, self.env = tmp, data, env or {}
        self.authz, self.admin, self.proc, self.runs = free_port(), free_port(), None, 0

    def start(self):
        full = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
        full.update(self.env)
        full["ESM_ADMIN_LISTEN"] = f"127.0.0.1:{self.admin}"
        full["ESM_AUTHZ_LISTEN"] = f"127.0.0.1:{self.authz}"
        self.runs += 1
        log = open(self.tmp / f"esm-{self.runs}.log", "w")
        self.proc = subprocess.Popen([str(ESM), "serve", "--dir", str(self.data)], env=full,
                                     stdout=log, stderr=log)
        wait_port(self.authz)

    def stop(self):
        if self.proc:
            stop_process(self.proc)

    def readyz(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None


class Load:
    """A client thread sending GETs through Envoy, each with its own x-request-id."""

    def __init__(self, port):
        self.port, self.seen, self.stop_at = port, [], None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        i = 0
        while not self.done.is_set():
            rid = f"r-{i}-{uuid.uuid4().hex[:8]}"
            try:
                status = request(self.port, "GET", f"/items/{i}", {"x-request-id": rid})[0]
            except OSError:
                status = None
            self.seen.append((time.time(), rid, status))
            i += 1

    def finish(self):
        self.done.set()
        self.thread.join(timeout=30)
        return self.seen


def recorded_ids(data, env=None):
    p = run("audit", "export", "--format", "jsonl", "--kind", "authz.decision", "--dir", data,
            env=env)
    return {json.loads(line)["correlation_id"] for line in p.stdout.splitlines() if line.strip()}


def assert_allowed_were_recorded(seen, ids):
    allowed = [rid for _, rid, status in seen if status == 200]
    missing = [rid for rid in allowed if rid not in ids]
    assert allowed, "no request was allowed at all"
    assert not missing, f"{len(missing)} of {len(allowed)} allowed requests have no record"
    return allowed


def envoy_in_front(tmp_path, authz_port, up_port):
    port = free_port()
    e = Envoy(tmp_path, bootstrap(free_port(), authz_port, up_port, http_port=port))
    return e, port


def fill(filler):
    """Fills the filesystem under `filler` (a file made beforehand, so that it exists even
    if the load fills the disk first) to its last byte. Unbuffered: a buffered file would
    raise ENOSPC again when it is closed."""
    fd = os.open(filler, os.O_WRONLY | os.O_APPEND)
    try:
        for size in (64 << 10, 512):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)


def test_full_disk_denies_unrecorded_requests_and_recovers(tmp_path, stack):
    _, _, up = stack
    data = tmp_path / "d"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(data)], check=True)
    esm = envoy = None
    try:
        filler = data / "filler"
        filler.write_bytes(b"")
        init(data)
        # A small queue, so that it fills within the test: with the default 65,536 the
        # decisions of minutes are queued (and recorded once space returns).
        esm = Esm(tmp_path, data, {"ESM_AUDIT_QUEUE_CAPACITY": "256"})
        esm.start()
        envoy, port = envoy_in_front(tmp_path, esm.authz, up)
        load = Load(port)
        time.sleep(2)
        fill(filler)
        full_at = time.time()
        time.sleep(5)
        assert esm.readyz() == 503, "not ready while the audit store refuses writes"
        os.remove(filler)
        freed_at = time.time()
        time.sleep(12)
        seen = load.finish()
        while_full = [s for t, _, s in seen if full_at + 1 < t < freed_at]
        assert while_full and 200 not in while_full[len(while_full) // 2:], \
            "with the disk full, requests are refused once the queue is full"
        late = [s for t, _, s in seen if t > freed_at + 10]
        assert late and all(s == 200 for s in late), "audited again within 10 s"
        assert esm.readyz() == 200
        esm.stop()
        assert esm.proc.returncode == 0, (tmp_path / "esm-1.log").read_text()[-2000:]
        run("audit", "verify", "--dir", data)
        assert_allowed_were_recorded(seen, recorded_ids(data))
    finally:
        if envoy:
            envoy.stop()
        if esm:
            esm.stop()
        subprocess.run(["umount", "-l", str(data)], check=False)


def restart_postgres():
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, timeout=60)


def test_postgres_restarts_under_load_leave_no_allowed_request_unrecorded(tmp_path, stack):
    _, _, up = stack
    data = tmp_path / "d"
    schema = f"esm_faults_{uuid.uuid4().hex[:10]}"
    env = {"ESM_AUDIT_URL": PG_URL, "ESM_AUDIT_SCHEMA": schema}
    run("init", "--trust-domain", TD, "--dir", data, env=env)
    shutil.rmtree(data / "policies")
    (data / "policies").mkdir()
    (data / "policies" / "allow.rego").write_text(ALLOW_ALL)
    esm = Esm(tmp_path, data, env)
    esm.start()
    envoy, port = envoy_in_front(tmp_path, esm.authz, up)
    try:
        load = Load(port)
        for _ in range(3):
            time.sleep(2)
            restart_postgres()
        time.sleep(3)
        seen = load.finish()
        esm.stop()
        run("audit", "verify", "--dir", data, env=env)
        allowed = assert_allowed_were_recorded(seen, recorded_ids(data, env))
        assert len(allowed) > 100
    finally:
        envoy.stop()
        esm.stop()
        subprocess.run(["psql", PG_URL, "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                       capture_output=True, check=False, timeout=60)


def test_kill_9_in_sync_mode_leaves_no_answered_decision_unrecorded(tmp_path, stack):
    _, _, up = stack
    data = tmp_path / "d"
    init(data)
    esm = Esm(tmp_path, data, {"ESM_AUTHZ_DECISION_LOG_MODE": "sync"})
    esm.start()
    envoy, port = envoy_in_front(tmp_path, esm.authz, up)
    try:
        load = Load(port)
        for _ in range(3):
            time.sleep(2)
            esm.proc.send_signal(signal.SIGKILL)
            esm.proc.wait(timeout=10)
            run("audit", "verify", "--dir", data)
            esm.start()
        time.sleep(1)
        seen = load.finish()
        esm.stop()
        run("audit", "verify", "--dir", data)
        allowed = assert_allowed_were_recorded(seen, recorded_ids(data))
        assert len(allowed) > 50
    finally:
        envoy.stop()
        esm.stop()
