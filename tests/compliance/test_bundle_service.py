"""The bundle service through a real Envoy: a policy set polls a small HTTP bundle server in
the test. An unchanged bundle costs a 304, a new revision is taken and named in every
decision record and in /metrics, a bundle with a bad signature is refused and audited, and a
restart while the server is down enforces the last good bundle it persisted."""

import http.server
import json
import threading
import time

from conftest import run
from envoy_harness import bootstrap, free_port, metrics, request, stop_process, wait_for
from test_ext_authz_features import POLICY, Es256, bundle, init


class BundleServer:
    """Serves one bundle with an ETag on loopback; answers 304 to a matching If-None-Match
    and records every request's If-None-Match."""

    def __init__(self):
        self.body, self.etag, self.seen = b"", None, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                inm = self.headers.get("If-None-Match")
                outer.seen.append(inm)
                if inm is not None and inm == outer.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.send_header("ETag", outer.etag)
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/bundles/authz.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, tmp, files, signer, revision):
        path = tmp / f"publish-{revision}.tar.gz"
        bundle(path, files, signer, {"revision": revision})
        self.body, self.etag = path.read_bytes(), f'"{revision}"'

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def audit(data):
    out = run("audit", "tail", "-n", "2000", "--dir", data).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def test_bundle_server_304_new_revision_bad_signature_and_outage(tmp_path, stack):
    esm, envoy, up = stack
    data = init(tmp_path)
    signer = Es256("bundle")
    (data / "bundle.pub.pem").write_text(signer.pem())
    srv = BundleServer()
    srv.publish(tmp_path, {"authz/policy.rego": POLICY, "data.json": json.dumps({"open": ["a"]})}, signer, "r1")
    env = {"ESM_AUTHZ_BUNDLE_URL": srv.url, "ESM_AUTHZ_BUNDLE_KEY": "bundle.pub.pem",
           "ESM_AUTHZ_BUNDLE_POLL_MIN": "300ms", "ESM_AUTHZ_BUNDLE_POLL_MAX": "500ms"}
    try:
        proc, authz, admin = esm(data, env)
        port = free_port()
        envoy(bootstrap(free_port(), authz, up, http_port=port))
        assert request(port, "GET", "/a")[0] == 200
        assert request(port, "GET", "/b")[0] == 403
        # Unchanged: every poll after the first sends the ETag and gets a 304.
        wait_for(lambda: srv.seen.count('"r1"') >= 2, "conditional polls")
        assert 'esm_authz_bundle_polls_total{policy_set="default",result="not_modified"}' in metrics(admin)
        assert (data / "bundles" / "default.tar.gz").read_bytes() == srv.body

        # Signed by another key: refused once, audited, and the old policy keeps deciding.
        srv.publish(tmp_path, {"authz/policy.rego": POLICY, "data.json": json.dumps({"open": ["a", "b"]})},
                    Es256("bundle"), "evil")
        wait_for(lambda: srv.seen.count('"evil"') >= 2, "the refused bundle's ETag sent back")
        assert request(port, "GET", "/b")[0] == 403
        m = metrics(admin)
        assert 'esm_authz_bundle_polls_total{policy_set="default",result="refused"} 1' in m

        # A new, properly signed revision is taken and named in decisions and metrics.
        srv.publish(tmp_path, {"authz/policy.rego": POLICY, "data.json": json.dumps({"open": ["b"]})}, signer, "r2")
        wait_for(lambda: request(port, "GET", "/b")[0] == 200, "revision r2 served")
        assert request(port, "GET", "/a")[0] == 403
        assert 'revision="r2"' in metrics(admin)
        time.sleep(1.5)
        events = audit(data)
        changes = [e for e in events if e["kind"] == "policy.changed"]
        refused = [c for c in changes if c["action"] == "refuse"]
        assert len(refused) == 1, refused
        assert "does not verify" in refused[0]["reason"]
        assert refused[0]["actor"] == srv.url
        assert refused[0]["details"]["changed.via"] == "esm:bundle-service"
        reloads = [c for c in changes if c["action"] == "reload"]
        assert reloads[-1]["actor"] == srv.url
        assert reloads[-1]["details"]["policy.revision"] == "r2"
        decisions = [e for e in events if e["kind"] == "authz.decision"]
        assert decisions[0]["details"]["policy.revision"] == "r1"
        assert decisions[-1]["details"]["policy.revision"] == "r2"

        # The server goes away and esm restarts: the persisted r2 is enforced.
        srv.stop()
        stop_process(proc)
        _, authz2, admin2 = esm(data, env)
        port2 = free_port()
        envoy(bootstrap(free_port(), authz2, up, http_port=port2))
        assert request(port2, "GET", "/b")[0] == 200
        assert request(port2, "GET", "/a")[0] == 403
        wait_for(lambda: 'result="failed"} 0' not in metrics(admin2), "a failed poll counted")
        assert 'revision="r2"' in metrics(admin2)
    finally:
        srv.stop()


def test_a_first_start_without_its_bundle_server_fails_with_the_reason(tmp_path):
    data = init(tmp_path)
    signer = Es256("bundle")
    (data / "bundle.pub.pem").write_text(signer.pem())
    dead = f"http://127.0.0.1:{free_port()}/b.tar.gz"
    env = {"ESM_AUTHZ_BUNDLE_URL": dead, "ESM_AUTHZ_BUNDLE_KEY": "bundle.pub.pem",
           "ESM_ADMIN_LISTEN": f"127.0.0.1:{free_port()}", "ESM_AUTHZ_LISTEN": f"127.0.0.1:{free_port()}"}
    p = run("serve", "--dir", data, env=env, check=False, timeout=60)
    assert p.returncode != 0
    assert "no bundle persisted at" in p.stderr and dead in p.stderr, p.stderr


def test_an_unsigned_bundle_over_plain_http_is_a_config_error(tmp_path):
    data = init(tmp_path)
    env = {"ESM_AUTHZ_BUNDLE_URL": "http://127.0.0.1:1/b.tar.gz"}
    p = run("serve", "--dir", data, env=env, check=False)
    assert p.returncode == 2, p.stderr
    assert "authz.bundle_url" in p.stderr and "bundle_key" in p.stderr, p.stderr
