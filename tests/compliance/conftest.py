"""Shared fixtures: the esm binary under test and fresh data dirs made with `esm init`."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ESM = pathlib.Path(os.environ.get("ESM_BIN", ROOT / "target" / "debug" / "esm"))
TIMEOUT = 60


def run(*args, cwd=None, env=None, check=True, input=None, timeout=TIMEOUT):
    """Runs esm with a bounded time (`timeout` seconds); returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
    full_env.update(env or {})
    p = subprocess.run(
        [str(ESM), *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"esm {' '.join(map(str, args))} exited {p.returncode}: {p.stderr}")
    return p


@pytest.fixture(scope="session")
def esm_bin():
    assert ESM.exists(), f"{ESM} is missing: build it first (tests/run does)"
    return ESM


def make_ca(tmp_path, algorithm="ec-p256", trust_domain="example.org"):
    data = tmp_path / "esm-data"
    run("init", "--trust-domain", trust_domain, "--dir", data, "--key-algorithm", algorithm)
    return data


@pytest.fixture
def ca(tmp_path, esm_bin):
    return make_ca(tmp_path)


@pytest.fixture
def stack(tmp_path, esm_bin):
    """Starts esm serve (and Envoys) on free loopback ports; stops all of them.

    `esm(data, env, unix=None)`: with `unix` (a socket path relative to the data dir),
    ext_authz listens only there and the returned port is None."""
    from envoy_harness import Envoy, free_port, start_upstream, stop_process, wait_path, wait_port

    started = []

    def esm(data, env=None, unix=None):
        authz = None if unix else free_port()
        admin = free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
        full.update(env or {})
        full["ESM_ADMIN_LISTEN"] = f"127.0.0.1:{admin}"
        full["ESM_AUTHZ_LISTEN"] = f"127.0.0.1:{authz}" if authz else ""
        if unix:
            full["ESM_AUTHZ_LISTEN_UNIX"] = unix
        log = open(tmp_path / f"esm-{admin}.log", "w")
        p = subprocess.Popen([str(ESM), "serve", "--dir", str(data)], env=full, stdout=log, stderr=log)
        started.append(p)
        if unix:
            wait_path(pathlib.Path(data) / unix, p)
        else:
            wait_port(authz)
        # The admin socket opens after the decision listeners: tests run `esm entry` next.
        wait_path(pathlib.Path(data) / "admin.sock", p)
        return p, authz, admin

    def envoy(config, **kw):
        e = Envoy(tmp_path, config, **kw)
        started.append(e)
        return e

    upstream, up_port = start_upstream()
    yield esm, envoy, up_port
    upstream.shutdown()
    for p in reversed(started):
        if isinstance(p, Envoy):
            p.stop()
        else:
            stop_process(p)


def on_a_terminal(args, stream, env=None, timeout=60):
    """Runs esm with one of its outputs (`stream`: "stdout" or "stderr") on a
    pseudo-terminal, as a person runs it, the other on a pipe. Returns the exit status, what
    went to the pipe, and what was drawn on the terminal (raw: progress redraws keep their
    carriage returns). Fails when the terminal stays silent for `timeout` seconds."""
    import pty
    import select

    full = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
    full.update(env or {})
    leader, follower = pty.openpty()
    to = {"stdout": follower, "stderr": subprocess.PIPE}
    if stream == "stderr":
        to = {"stdout": subprocess.PIPE, "stderr": follower}
    p = subprocess.Popen([str(ESM), *map(str, args)], env=full, stdin=subprocess.DEVNULL, **to)
    os.close(follower)
    piped = p.stderr if stream == "stdout" else p.stdout
    drawn = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            assert ready, f"esm {args[0]} on a terminal drew nothing for {timeout} s: {drawn!r}"
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        code = p.wait(timeout=timeout)
        out = piped.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        piped.close()
        os.close(leader)
    return code, out.decode(), drawn.decode()
