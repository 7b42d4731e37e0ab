"""deploy/quickstart/run --check: esm and two real Envoys on loopback, certificates over SDS,
mTLS between the Envoys, every request decided by esm's ext_authz, all of it in the audit
log. The script checks itself; this test also looks at what it left behind (kept with
QUICKSTART_KEEP=1) and that it stopped everything it started."""

import json
import os
import shutil
import socket
import subprocess

from conftest import ESM, ROOT, run

SCRIPT = ROOT / "deploy" / "quickstart" / "run"


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_quickstart_check_allows_denies_over_mtls_and_audits_everything(esm_bin):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESM_", "QUICKSTART_"))}
    env.update(ESM_BIN=str(esm_bin), QUICKSTART_KEEP="1")
    p = subprocess.run([str(SCRIPT), "--check"], env=env, capture_output=True, text=True, timeout=240)
    summary = next((json.loads(line) for line in p.stdout.splitlines()
                    if line.startswith('{"quickstart": "summary"')), None)
    assert summary is not None, p.stdout + p.stderr
    data = summary["data_dir"]
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        assert "quickstart: check passed" in p.stdout
        # The allowed request crossed a real mTLS handshake at the server Envoy.
        assert summary["ssl_handshakes"] > 0
        # Everything the script started is gone: no listener left on any of its ports.
        assert [name for name, port in summary["ports"].items() if listening(port)] == []
        assert not os.path.exists(os.path.join(data, "agent.sock")) or not _connects(
            os.path.join(data, "agent.sock"))

        events = [json.loads(line) for line in
                  run("audit", "tail", "-n", "1000", "--dir", data).stdout.splitlines()]
        issued = [e for e in events if e["kind"] == "svid.issued"]
        assert {e["subject"] for e in issued} >= {summary["client_id"], summary["server_id"]}
        assert all(e["details"]["via"] == "sds" for e in issued)
        decisions = [e for e in events if e["kind"] == "authz.decision"]
        # The caller's identity in the decision is the SPIFFE ID from the client Envoy's
        # certificate (Envoy's source.principal), the destination the server Envoy's.
        allowed = [e for e in decisions if e["outcome"] == "allow"]
        assert [(e["actor"], e["subject"], e["details"]["path"]) for e in allowed] == [
            (summary["client_id"], summary["server_id"], "/hello")]
        denied = [e for e in decisions if e["outcome"] == "deny"]
        assert sorted((e["action"].split()[0], e["details"]["path"]) for e in denied) == [
            ("DELETE", "/hello"), ("GET", "/admin")]
        assert all(e["actor"] == summary["client_id"] and e["details"]["status"] == 403 for e in denied)
        # After the shutdown (final checkpoint signed) the whole log verifies.
        verify = run("audit", "verify", "--dir", data)
        assert verify.stdout.startswith("ok:"), verify.stdout
    finally:
        shutil.rmtree(os.path.dirname(data), ignore_errors=True)


def _connects(path):
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def test_quickstart_rejects_unknown_arguments():
    p = subprocess.run([str(SCRIPT), "--chek"], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "ESM_BIN": str(ESM)})
    assert p.returncode == 2
    assert "--check" in p.stderr


def test_quickstart_interactive_serves_until_ctrl_c_then_stops_everything(esm_bin, tmp_path):
    import signal
    import time
    import urllib.request

    from envoy_harness import free_port

    names = ["ESM_AUTHZ", "ESM_ADMIN", "CLIENT", "SERVER", "UPSTREAM", "CLIENT_ADMIN", "SERVER_ADMIN"]
    ports = {n: free_port() for n in names}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESM_", "QUICKSTART_"))}
    env.update({f"QUICKSTART_PORT_{n}": str(p) for n, p in ports.items()})
    env.update(ESM_BIN=str(esm_bin), QUICKSTART_DIR=str(tmp_path / "qs"))
    out = open(tmp_path / "out", "w")
    p = subprocess.Popen([str(SCRIPT)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        end = time.time() + 120
        while "Ctrl-C stops everything" not in (tmp_path / "out").read_text():
            assert p.poll() is None and time.time() < end, (tmp_path / "out").read_text()
            time.sleep(0.2)
        text = (tmp_path / "out").read_text()
        client = ports["CLIENT"]
        assert f"curl -i http://127.0.0.1:{client}/hello" in text and "audit verify" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{client}/hello", timeout=10) as r:
            assert r.status == 200
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 0
        assert [n for n, port in ports.items() if listening(port)] == []
    finally:
        if p.poll() is None:
            # SIGTERM first: the script stops its children; SIGKILL would orphan them.
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)
        out.close()
