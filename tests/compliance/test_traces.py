"""`[telemetry] otlp_endpoint`: spans exported over OTLP/gRPC to a collector stand-in (the
`opentelemetry-proto` package's TraceService on loopback). A Check's span continues the
trace Envoy sent in the CheckRequest's headers, also through a real Envoy; issuance, SDS
pushes and audit commits have their spans; a collector that is dead or hung does not fail
or slow decisions; the endpoint is restart-only."""

import json
import os
import signal
import socket
import statistics
import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from spiffe import WorkloadApiClient

from conftest import run
from envoy_harness import bootstrap, free_port, request, stop_process
from test_sds_envoy import SERVER, server_envoy
from test_serve_signals import edit_config, wait_event

TD = "example.org"
WEB = f"spiffe://{TD}/ns/prod/sa/web"
CHECK = "/envoy.service.auth.v3.Authorization/Check"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it, with its resource's attributes."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):
        with self.lock:
            for rs in request.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    self.spans.extend((resource, s) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait(self, pred, what, deadline=15):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            with self.lock:
                hits = [(r, s) for r, s in self.spans if pred(s)]
            if hits:
                return hits
            time.sleep(0.1)
        with self.lock:
            names = sorted({s.name for _, s in self.spans})
        raise AssertionError(f"timed out waiting for {what}; spans seen: {names}")

    def stop(self):
        self.server.stop(grace=None)


def attrs(span):
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else (
            v.int_value if v.HasField("int_value") else v.bool_value)
    return out


def pb_len(field, payload):
    """One length-delimited protobuf field."""
    def varint(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def check_request(headers, path="/items/1"):
    """A CheckRequest as Envoy sends it: attributes.request.http with method, path, host
    and the request's headers (envoy.service.auth.v3, encoded by hand)."""
    http = pb_len(2, b"GET") + pb_len(4, path.encode()) + pb_len(5, b"svc.local")
    for k, v in headers.items():
        http += pb_len(3, pb_len(1, k.encode()) + pb_len(2, v.encode()))
    request = pb_len(2, http)
    return pb_len(1, pb_len(4, request))


def checker(authz):
    channel = grpc.insecure_channel(f"127.0.0.1:{authz}")
    call = channel.unary_unary(CHECK, request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
    return channel, lambda headers, path="/items/1": call(check_request(headers, path), timeout=5)


def start(tmp_path, stack, endpoint=None, in_file=False):
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    env = {}
    if endpoint and in_file:
        edit_config(data, 'otlp_endpoint = ""', f'otlp_endpoint = "{endpoint}"')
    elif endpoint:
        env["ESM_TELEMETRY_OTLP_ENDPOINT"] = endpoint
    proc, authz, admin = esm(data, env)
    return data, proc, authz, admin


def test_check_spans_continue_envoys_trace_and_issuance_is_traced(tmp_path, stack):
    collector = Collector()
    try:
        data, proc, authz, _ = start(tmp_path, stack, f"http://127.0.0.1:{collector.port}")
        channel, check = checker(authz)
        w3c, w3c_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        b3, b3_span = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
        one, one_span = "463ac35c9f6413ad48485a3953bb6124", "0020000000000001"
        check({"traceparent": f"00-{w3c}-{w3c_span}-01"})
        check({"x-b3-traceid": b3, "x-b3-spanid": b3_span, "x-b3-sampled": "1"})
        check({"b3": f"{one}-{one_span}-1"})
        check({"traceparent": f"00-{'0' * 32}-{w3c_span}-01"})          # hostile: a new root
        channel.close()
        for trace, parent in ((w3c, w3c_span), (b3, b3_span), (one, one_span)):
            [(resource, span)] = collector.wait(
                lambda s, t=trace: s.name == "authz.check" and s.trace_id.hex() == t,
                f"the Check span of trace {trace}")
            assert span.parent_span_id.hex() == parent
            assert attrs(span)["trace.id"] == trace
            assert resource["service.name"] == "esm"
            assert resource["service.version"] and resource["service.instance.id"]
        roots = collector.wait(lambda s: s.name == "authz.check" and not s.parent_span_id,
                               "the Check span without a valid parent")
        assert all(s.trace_id.hex() != "0" * 32 for _, s in roots)

        run("entry", "create", "--spiffe-id", WEB, "--selector", f"unix:uid:{os.getuid()}",
            "--dir", data)
        with WorkloadApiClient(socket_path=f"unix://{data / 'agent.sock'}",
                               default_timeout=10) as c:
            assert str(c.fetch_x509_svid().spiffe_id) == WEB
        [(_, issued)] = collector.wait(
            lambda s: s.name == "ca.issue" and attrs(s).get("spiffe.id") == WEB, "the issuance span")
        assert issued.end_time_unix_nano >= issued.start_time_unix_nano

        # Shutdown flushes: a Check answered just before SIGTERM still arrives.
        channel, check = checker(authz)
        last = "5b8efff798038103d269b633813fc60c"
        check({"traceparent": f"00-{last}-eee19b7ec3c1b174-01"})
        channel.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        collector.wait(lambda s: s.trace_id.hex() == last, "the last Check's span after SIGTERM",
                       deadline=2)
    finally:
        collector.stop()


def latencies(check, n=150):
    out = []
    for i in range(n):
        t = time.perf_counter()
        check({"traceparent": f"00-{i + 1:032x}-{i + 1:016x}-01"}, f"/items/{i}")
        out.append(time.perf_counter() - t)
    return out


def test_a_dead_or_hung_collector_neither_fails_nor_slows_checks(tmp_path, stack):
    """Refused connections (nothing listens) and a peer that accepts and never answers: every
    Check is answered, and the median stays near the one without export."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(1)                         # accepts into the backlog, never reads
    results = {}
    try:
        for name, endpoint in (("none", None),
                               ("dead", f"http://127.0.0.1:{free_port()}"),
                               ("hung", f"http://127.0.0.1:{hung.getsockname()[1]}")):
            sub = tmp_path / name
            sub.mkdir()
            _, proc, authz, _ = start(sub, stack, endpoint)
            channel, check = checker(authz)
            latencies(check, 20)                              # warm-up
            started = time.monotonic()
            lat = latencies(check)
            lat.sort()
            results[name] = (statistics.median(lat), time.monotonic() - started, lat[-2])
            channel.close()
            stop_process(proc)
            assert proc.returncode == 0, name
    finally:
        hung.close()
    print({k: f"median {m * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, 150 Checks in {t:.2f} s"
           for k, (m, t, p99) in results.items()})
    base = results["none"][0]
    for name in ("dead", "hung"):
        assert results[name][0] < base * 3 + 0.005, results


def test_the_otlp_endpoint_waits_for_a_restart(tmp_path, stack):
    """SIGHUP with a new endpoint lists it under `restart`; spans keep going to the old one."""
    first, second = Collector(), Collector()
    try:
        data, proc, authz, _ = start(tmp_path, stack, f"http://127.0.0.1:{first.port}", in_file=True)
        # SIGHUP is handled once serve is up (the SDS socket is the last thing it starts).
        log = next(tmp_path.glob("esm-*.log"))
        end = time.monotonic() + 10
        while "SDS serving" not in log.read_text() and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.5)
        edit_config(data, f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}")
        proc.send_signal(signal.SIGHUP)
        applied = wait_event(data, lambda e: e["kind"] == "config.changed"
                             and e["outcome"] == "success", "the reload")
        assert applied["details"]["restart"] == ["telemetry.otlp_endpoint"]
        channel, check = checker(authz)
        trace = "0af7651916cd43dd8448eb211c80319c"
        check({"traceparent": f"00-{trace}-b7ad6b7169203331-01"})
        channel.close()
        first.wait(lambda s: s.trace_id.hex() == trace, "the Check span at the first collector")
        assert not second.spans
    finally:
        first.stop()
        second.stop()


def through_envoy(tmp_path, stack, data, authz, traceparent, tracer=None):
    """One request from a client (web, over mTLS) with `traceparent`, through a real Envoy (as
    api) that asks esm; with `tracer` (a collector's port) Envoy traces too, exporting its
    spans there over OTLP. Returns the headers the upstream got."""
    _, envoy, up = stack
    certs = {}
    for name in ("api", "web"):
        o = tmp_path / name
        run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/ns/prod/sa/{name}", "--out", o,
            "--dir", data)
        certs[name] = {"cert": o / "svid.pem", "key": o / "svid.key", "ca": o / "bundle.pem"}
    port = free_port()
    api = certs["api"]
    cfg = bootstrap(free_port(), authz, up, http_port=port, tls=(api["cert"], api["key"], api["ca"]))
    if tracer:
        h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
        cfg["static_resources"]["clusters"].append({
            "name": "otlp", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": h2,
            "load_assignment": {"cluster_name": "otlp", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": tracer}}}}]}]}})
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["tracing"] = {"random_sampling": {"value": 100}, "provider": {
            "name": "envoy.tracers.opentelemetry", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": "otlp"}, "timeout": "1s"},
                "service_name": "front-envoy"}}}
        cfg["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {
            "tracing.opentelemetry.flush_interval_ms": 200}}]}
    envoy(cfg)
    status, _, body = request(port, "GET", "/items/7", tls=certs["web"],
                              headers={"traceparent": traceparent})
    assert status == 200, body
    return json.loads(body)


def test_a_check_through_envoy_sds_pushes_and_audit_commits_are_exported(tmp_path, stack):
    """A real Envoy decides a client's request through esm: the client's `traceparent`
    reaches esm in the CheckRequest (this Envoy has no tracer, so it passes the header on
    untouched, as the upstream sees), and `authz.check` is exported in that trace with the
    client's span as its parent. A real SDS client's pushes, the one after a CA change among
    them, and the audit writer's commits are exported too."""
    _, envoy, up = stack
    collector = Collector()
    try:
        data, _, authz, _ = start(tmp_path, stack, f"http://127.0.0.1:{collector.port}")
        run("entry", "create", "--spiffe-id", SERVER, "--selector", f"unix:uid:{os.getuid()}",
            "--dir", data)
        envoy(server_envoy(free_port(), free_port(), up, data / "agent.sock"), node="server")
        pushed = collector.wait(lambda s: s.name == "sds.push" and attrs(s).get("sds.sent") is True,
                                "an SDS push")
        a = attrs(pushed[0][1])
        # Counts are integers, as a trace backend sums and compares them (esm records them as
        # i64: tracing-opentelemetry would export an unsigned one as its decimal string).
        assert a["sds.caller"].startswith("unix:uid:") and a["sds.resources"] >= 1, a
        assert isinstance(a["sds.resources"], int), a
        collector.wait(lambda s: s.name == "ca.issue" and attrs(s).get("spiffe.id") == SERVER,
                       "the issuance of Envoy's SVID")
        out = run("ca", "rotate", "prepare", "--root", "--dir", data)
        assert out.stdout.startswith("done:"), out.stdout
        collector.wait(lambda s: s.name == "sds.push" and attrs(s).get("sds.after_ca_change") is True
                       and attrs(s).get("sds.sent") is True, "the push of the new root")

        trace, parent = "6e0c63257de34c926f9efcd03927272e", "b9c7c989f97918e1"
        upstream = through_envoy(tmp_path, stack, data, authz, f"00-{trace}-{parent}-01")
        assert upstream["traceparent"] == f"00-{trace}-{parent}-01"    # no span of Envoy's own
        [(resource, span)] = collector.wait(
            lambda s: s.name == "authz.check" and s.trace_id.hex() == trace, "the Check span")
        assert span.parent_span_id.hex() == parent
        assert attrs(span)["trace.id"] == trace and resource["service.name"] == "esm"
        # The decision's record is committed by the audit writer, in a span of its own.
        commits = collector.wait(lambda s: s.name == "audit.commit"
                                 and attrs(s).get("audit.events", 0) >= 1, "an audit commit")
        assert all(isinstance(attrs(s)["audit.events"], int) for _, s in commits)
        assert all(s.end_time_unix_nano >= s.start_time_unix_nano for _, s in commits)
    finally:
        collector.stop()



def traced(tmp_path, stack, collector):
    """A request through an Envoy that traces to `collector` too: (the client's trace and
    span, Envoy's ingress span, Envoy's span of its Check call to esm, esm's Check span)."""
    data, _, authz, _ = start(tmp_path, stack, f"http://127.0.0.1:{collector.port}")
    trace, client = "0c4d9e3f5a6b7c8d9e0f1a2b3c4d5e6f", "1a2b3c4d5e6f7a8b"
    upstream = through_envoy(tmp_path, stack, data, authz, f"00-{trace}-{client}-01",
                             tracer=collector.port)

    def one(pred, what):
        [(resource, span)] = collector.wait(lambda s: s.trace_id.hex() == trace and pred(s), what)
        return resource, span

    ingress = one(lambda s: s.name == "ingress", "Envoy's ingress span")
    call = one(lambda s: s.name.endswith("Authorization.Check egress"), "Envoy's span of the Check")
    check = one(lambda s: s.name == "authz.check", "esm's Check span")
    # What Envoy sent upstream continues its own ingress span, not the client's.
    assert upstream["traceparent"] == f"00-{trace}-{ingress[1].span_id.hex()}-01"
    return trace, client, ingress, call, check


def test_behind_a_tracing_envoy_the_check_span_is_in_envoys_trace(tmp_path, stack):
    """Envoy with its own OpenTelemetry tracer (exporting to the same collector): the Check
    esm exports is in the trace Envoy's spans are in, as a child of Envoy's span of the
    Check call. ext_authz copies the request's headers as they came (the client's
    `traceparent`); Envoy puts its own span in the gRPC call's metadata, and that nearer
    parent is the one esm continues."""
    collector = Collector()
    try:
        trace, client, (ingress_r, ingress), (_, call), (check_r, check) = traced(tmp_path, stack, collector)
        assert ingress_r["service.name"] == "front-envoy" and check_r["service.name"] == "esm"
        assert ingress.parent_span_id.hex() == client
        assert call.parent_span_id == ingress.span_id
        assert check.parent_span_id == call.span_id
        assert attrs(check)["trace.id"] == trace
    finally:
        collector.stop()
