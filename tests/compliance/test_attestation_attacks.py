"""Attacks on workload attestation at esm's agent socket, made by an unprivileged uid (65534)
with agent_peer.py: a process that is not the entitled program tries to get the SVID of an
entry that selects `unix:uid:65534` and `unix:path:<program>`, by making the kernel's and
/proc's word about the socket's peer point at the entitled program. Each attack must get no
SVID, and esm must log the refusal with the pid that connected; the entitled program
itself, unchanged, still gets its SVID."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import run
from envoy_harness import wait_path

TD = "example.org"
WEB = f"spiffe://{TD}/ns/prod/sa/web"
NOBODY = 65534
HELPER = pathlib.Path(__file__).with_name("agent_peer.py")
PYTHON = os.path.realpath("/usr/bin/python3")
SLEEP = os.path.realpath(shutil.which("sleep") or "/usr/bin/sleep")
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

CYCLER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
/* Forks until a child gets pid argv[1]; that child execs argv[2] (for 30 s). */
int main(int argc, char **argv) {
    pid_t target = (pid_t)atoi(argv[1]);
    time_t end = time(NULL) + 100;
    while (time(NULL) < end) {
        pid_t p = fork();
        if (p < 0) { usleep(1000); continue; }
        if (p == 0) {
            if (getpid() == target) { execl(argv[2], argv[2], "30", (char *)0); _exit(127); }
            _exit(0);
        }
        if (p == target) return 0;
        waitpid(p, NULL, 0);
    }
    fprintf(stderr, "pid %d did not come round\n", (int)target);
    return 1;
}
"""


@pytest.fixture
def agent(tmp_path, stack):
    """esm serving its agent socket in a directory uid 65534 can reach, with the helper
    beside it; yields (socket path, the data dir, a function reading esm's log)."""
    assert os.path.exists(PYTHON), "a system Python at /usr/bin/python3 runs the attacker"
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    shared = pathlib.Path(tempfile.mkdtemp(prefix="esm-attest-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        shutil.copy(HELPER, shared / HELPER.name)
        sock = shared / "agent.sock"
        proc, _, admin = esm(data, env={"ESM_AGENT_SOCKET": str(sock)})
        wait_path(sock, proc)
        wait_path(data / "admin.sock", proc)
        log = tmp_path / f"esm-{admin}.log"
        yield sock, data, shared, log.read_text
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def entitle(data, program):
    run("entry", "create", "--spiffe-id", WEB, "--selector", f"unix:uid:{NOBODY}",
        "--selector", f"unix:path:{program}", "--dir", data)


def peer(argv, timeout=150):
    """Runs the helper in its own session, so that it and every process it leaves (the
    exec'd program, forked children) are killed however it ends. The JSON it printed."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, f"helper printed no result (exit {p.returncode}): {err}"
    return json.loads(lines[-1])


def got_svid(result):
    """An SVID came back: its SPIFFE ID (a resource name, a Workload API field) or its key."""
    data = bytes.fromhex(result["data"])
    return WEB.encode() in data or b"PRIVATE KEY" in data


def assert_refused(result, read_log, reason):
    assert not got_svid(result), "the attacker got the entitled program's SVID"
    assert result["data"] == "" and (result["ended"] or result["rst"] is not None), result
    pid = result["connector"]
    refusals = [ln for ln in read_log().splitlines()
                if "caller refused" in ln and re.search(rf"peer\.pid\W+{pid}\b", ln)]
    assert refusals, f"no refusal logged for peer.pid={pid}"
    assert any(reason in ln for ln in refusals), refusals


@pytest.mark.parametrize("rpc", ["sds", "workload"])
def test_entitled_program_gets_its_svid(agent, rpc):
    sock, data, shared, _ = agent
    entitle(data, PYTHON)
    result = peer([*AS_NOBODY, PYTHON, str(shared / HELPER.name), "honest", str(sock), rpc])
    assert got_svid(result), result
    if rpc == "sds":
        assert b"PRIVATE KEY" in bytes.fromhex(result["data"])


def test_forked_child_of_an_unchanged_connector_is_served_as_it(agent):
    """The rule's other side: the process that connected is alive and still the entitled
    program, so a child it forked (which runs the same program) is served as it."""
    sock, data, shared, _ = agent
    entitle(data, PYTHON)
    result = peer([*AS_NOBODY, PYTHON, str(shared / HELPER.name), "child-asks", str(sock), "sds"])
    assert result["pid"] != result["connector"]
    assert got_svid(result), result


@pytest.mark.parametrize("rpc", ["sds", "workload"])
def test_refuses_child_after_connector_execs_the_entitled_program(agent, rpc):
    """connect, fork, the parent execs the entitled program, the child asks on the socket
    it inherited: /proc/<pid>/exe of the pid that connected now reads the entitled path."""
    sock, data, shared, read_log = agent
    entitle(data, SLEEP)
    result = peer([*AS_NOBODY, PYTHON, str(shared / HELPER.name), "fork-exec", str(sock), rpc, SLEEP])
    assert_refused(result, read_log, "executed another program")


def test_refuses_child_after_connector_pid_is_reused_by_the_entitled_program(agent):
    """connect, fork, exit; fork until the entitled program runs under the pid that
    connected (pid_max is small enough here to come round within seconds)."""
    cc = shutil.which("cc")
    assert cc, "a C compiler builds the pid cycler"
    sock, data, shared, read_log = agent
    entitle(data, SLEEP)
    src = shared / "cycler.c"
    src.write_text(CYCLER_C)
    subprocess.run([cc, "-O2", "-o", str(shared / "cycler"), str(src)], check=True, timeout=60)
    result = peer([*AS_NOBODY, PYTHON, str(shared / HELPER.name), "pid-reuse", str(sock), "sds",
                   SLEEP, str(shared / "cycler")])
    assert_refused(result, read_log, "has exited")


def userns_available():
    p = subprocess.run([*AS_NOBODY, "unshare", "-Urm", "true"], capture_output=True, timeout=30)
    return p.returncode == 0


def test_refuses_program_bind_mounted_over_the_entitled_path_in_own_mount_namespace(agent):
    """unshare -Urm, bind-mount Python over the entitled path, exec it there: the host's
    readlink of /proc/<pid>/exe shows the entitled path, but it is another file."""
    if not userns_available():
        pytest.skip("unprivileged user namespaces are not allowed on this machine")
    sock, data, shared, read_log = agent
    entitle(data, SLEEP)
    result = peer([*AS_NOBODY, "unshare", "-Urm", PYTHON, str(shared / HELPER.name), "userns",
                   str(sock), "sds-default", SLEEP])
    assert not got_svid(result), "the bind-mounted program got the SVID"
    assert result["data"] == "" and result["ended"], result
    # Attested, but only as uid and gid: no entry matches, and the refusal names the pid.
    actor = f"unix:uid:{NOBODY}:pid:{result['connector']}"
    assert any("SDS request refused" in ln and actor in ln for ln in read_log().splitlines())
