"""With the defaults (`esm init`, `esm serve`), a workload running as its own unprivileged uid
(here a real Envoy as uid 65534, nobody) reaches the agent socket and gets its certificate over
SDS, while that uid can read none of esm's secrets (config, CA keys, audit log and keys) and
cannot open the admin socket."""

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import run
from envoy_harness import envoy_bin, free_port, stop_process
from test_sds_envoy import server_envoy

TD = "example.org"
NOBODY = 65534
WORKLOAD = f"spiffe://{TD}/ns/edge/sa/nobody-envoy"


def mode(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


def as_nobody(action, path):
    """Runs `action` ("read", "list", "connect") on `path` in a child process that has become
    uid/gid 65534 with no supplementary groups; returns the errno it met (0: it succeeded)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup, only syscalls, then _exit
        code = 99
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            try:
                if action == "read":
                    with open(path, "rb") as f:
                        f.read(1)
                elif action == "list":
                    os.listdir(path)
                else:
                    s = socket.socket(socket.AF_UNIX)
                    s.settimeout(5)
                    s.connect(str(path))
                    s.close()
                code = 0
            except OSError as e:
                code = e.errno or 98
            os.write(w, str(code).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        end = time.time() + 20
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.time() > end:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise AssertionError(f"{action} {path} as nobody did not finish")
            time.sleep(0.02)
        return int(os.read(r, 16) or b"97")
    finally:
        os.close(r)


@pytest.fixture
def world_dir():
    """A directory every user may enter (pytest's tmp_path is under a 0700 dir of root)."""
    d = tempfile.mkdtemp(prefix="esm-modes-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_init_keeps_secrets_private_and_the_data_dir_traversable(world_dir, esm_bin):
    data = os.path.join(world_dir, "data")
    run("init", "--trust-domain", TD, "--dir", data)
    assert mode(data) == 0o711
    assert mode(f"{data}/esm.toml") == 0o600
    for d in ("ca", "ca/keys", "audit", "policies"):
        assert mode(f"{data}/{d}") == 0o700, d
    assert mode(f"{data}/audit.db") == 0o600
    keys = os.listdir(f"{data}/ca/keys")
    assert keys and all(mode(f"{data}/ca/keys/{k}") == 0o600 for k in keys)


def test_envoy_as_uid_65534_gets_its_certificate_and_cannot_touch_esm_secrets(world_dir, stack):
    esm, _, up = stack
    data = os.path.join(world_dir, "data")
    run("init", "--trust-domain", TD, "--dir", data)
    esm(data)
    sock = os.path.join(data, "agent.sock")
    run("entry", "create", "--spiffe-id", WORKLOAD, "--selector", f"unix:uid:{NOBODY}", "--dir", data)

    # What uid 65534 may and may not do in the data dir, as the defaults leave it.
    assert as_nobody("connect", sock) == 0
    assert as_nobody("connect", os.path.join(data, "admin.sock")) == errno.EACCES
    assert as_nobody("list", data) == errno.EACCES
    secrets = ["esm.toml", "audit.db", "audit.db-wal", "audit/checkpoint.key", "audit/hmac.key",
               "ca/state.json", "policies/data.json"]
    secrets += [f"ca/keys/{k}" for k in os.listdir(os.path.join(data, "ca", "keys"))]
    for name in secrets:
        path = os.path.join(data, name)
        assert os.path.exists(path), name
        assert as_nobody("read", path) == errno.EACCES, name

    # A real Envoy as uid 65534: its binary, config and log in a dir that uid may read.
    edir = os.path.join(world_dir, "envoy")
    os.mkdir(edir, 0o755)
    exe = os.path.join(edir, "envoy")
    try:
        os.link(envoy_bin(), exe)
    except OSError:
        shutil.copy2(envoy_bin(), exe)
    os.chmod(exe, 0o755)
    admin, port = free_port(), free_port()
    cfg = server_envoy(admin, port, up, sock)
    cfg_path = os.path.join(edir, "envoy.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    os.chmod(cfg_path, 0o644)
    log_path = os.path.join(edir, "envoy.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [exe, "-c", cfg_path, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn",
         "--service-node", "nobody", "--service-cluster", "nobody"],
        stdout=log, stderr=subprocess.STDOUT, user=NOBODY, group=NOBODY, extra_groups=[], cwd=edir)
    try:
        certs, end = [], time.time() + 30
        while time.time() < end and not certs:
            assert proc.poll() is None, open(log_path).read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/certs", timeout=1) as r:
                    certs = [c for c in json.loads(r.read())["certificates"] if c.get("cert_chain")]
            except OSError:
                pass
            time.sleep(0.2)
        assert certs, "Envoy as uid 65534 got no certificate over SDS: " + open(log_path).read()
        sans = [s["uri"] for c in certs for cc in c["cert_chain"] for s in cc.get("subject_alt_names", [])
                if "uri" in s]
        assert WORKLOAD in sans
        assert int(open(f"/proc/{proc.pid}/status").read().split("Uid:")[1].split()[0]) == NOBODY
    finally:
        stop_process(proc)
        log.close()
    issued = [json.loads(l) for l in run("audit", "tail", "-n", "50", "--dir", data).stdout.splitlines()]
    got = [e for e in issued if e["kind"] == "svid.issued" and e["subject"] == WORKLOAD]
    assert got and f"uid:{NOBODY}" in got[0]["actor"], got
