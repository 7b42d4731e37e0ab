"""gRPC request bodies through a real Envoy, as OPA-Envoy decodes them: Envoy sends the body
as bytes (with_request_body.pack_as_bytes), esm decodes its first message by the method's
input type from authz.proto_descriptor, and the policy reads it in parsed_body. Also
authz.skip_request_body_parse, which leaves the body unparsed."""

import shutil

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from conftest import run
from envoy_harness import bootstrap, free_port, request

TD = "example.org"

POLICY = """package envoy.authz

import rego.v1

default allow := false

# Orders of bolts, at most 100 at a time. int64 fields arrive as strings (protobuf JSON).
allow if {
	input.parsed_body.item == "bolts"
	to_number(input.parsed_body.quantity) <= 100
	not input.truncated_body
}
"""

SKIP_POLICY = """package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.method == "POST"
"""


def descriptor_set():
    """package things.v1; message Order {string item = 1; int64 quantity = 2;}
    service Orders {rpc Place(Order) returns (Order); rpc Stream(stream Order) returns (Order);}"""
    f = descriptor_pb2.FileDescriptorProto(name="things.proto", package="things.v1", syntax="proto3")
    m = f.message_type.add(name="Order")
    m.field.add(name="item", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    m.field.add(name="quantity", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    s = f.service.add(name="Orders")
    s.method.add(name="Place", input_type=".things.v1.Order", output_type=".things.v1.Order")
    s.method.add(name="Stream", input_type=".things.v1.Order", output_type=".things.v1.Order",
                 client_streaming=True)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    order = message_factory.GetMessageClass(pool.FindMessageTypeByName("things.v1.Order"))
    return descriptor_pb2.FileDescriptorSet(file=[f]).SerializeToString(), order


def with_body_as_bytes(config, max_bytes=65536):
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for hf in f["typed_config"].get("http_filters", []):
                    if hf["name"] == "envoy.filters.http.ext_authz":
                        hf["typed_config"]["with_request_body"] = {
                            "max_request_bytes": max_bytes, "allow_partial_message": True,
                            "pack_as_bytes": True}
    return config


def init(tmp_path, policy, name="d"):
    data = tmp_path / name
    run("init", "--trust-domain", TD, "--dir", data)
    shutil.rmtree(data / "policies")
    (data / "policies").mkdir()
    (data / "policies" / "policy.rego").write_text(policy)
    return data


def call(port, method, payload):
    """The gRPC status Envoy answered with: PERMISSION_DENIED when esm denied. An allowed
    call reaches the HTTP/1 echo upstream, which is no gRPC server: any other status."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        rpc = ch.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            rpc(payload, timeout=5)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()


def test_grpc_bodies_are_decoded_by_the_proto_descriptor_and_decided_on(tmp_path, stack):
    esm, envoy, up = stack
    data = init(tmp_path, POLICY)
    fds, order = descriptor_set()
    (data / "api.pb").write_bytes(fds)
    _, authz, _ = esm(data, {"ESM_AUTHZ_PROTO_DESCRIPTOR": "api.pb"})
    port = free_port()
    envoy(with_body_as_bytes(bootstrap(free_port(), authz, up, http_port=port)))
    denied = grpc.StatusCode.PERMISSION_DENIED

    ok = order(item="bolts", quantity=40).SerializeToString()
    assert call(port, "/things.v1.Orders/Place", ok) != denied
    assert call(port, "/things.v1.Orders/Place", order(item="bolts", quantity=4000).SerializeToString()) == denied
    assert call(port, "/things.v1.Orders/Place", order(item="nuts", quantity=1).SerializeToString()) == denied
    # A method the descriptors do not name, and a client-streaming one, give a null body.
    assert call(port, "/things.v1.Orders/Cancel", ok) == denied
    assert call(port, "/things.v1.Other/Place", ok) == denied
    assert call(port, "/things.v1.Orders/Stream", ok) == denied
    # Bytes that are not an Order (a length past the end) deny as a malformed body.
    assert call(port, "/things.v1.Orders/Place", b"\x0a\x7fbolts") == denied

    # An esm without the descriptors: every gRPC body is null, so nothing is allowed.
    other = init(tmp_path, POLICY, "no-descriptors")
    _, authz2, _ = esm(other, {})
    port2 = free_port()
    envoy(with_body_as_bytes(bootstrap(free_port(), authz2, up, http_port=port2)))
    assert call(port2, "/things.v1.Orders/Place", ok) == denied


def test_a_message_cut_by_envoys_body_limit_is_truncated_and_denied(tmp_path, stack):
    esm, envoy, up = stack
    data = init(tmp_path, POLICY)
    fds, order = descriptor_set()
    (data / "api.pb").write_bytes(fds)
    _, authz, _ = esm(data, {"ESM_AUTHZ_PROTO_DESCRIPTOR": "api.pb"})
    port = free_port()
    envoy(with_body_as_bytes(bootstrap(free_port(), authz, up, http_port=port), max_bytes=64))
    small = order(item="bolts", quantity=1).SerializeToString()
    large = order(item="bolts" + " " * 500, quantity=1).SerializeToString()
    assert call(port, "/things.v1.Orders/Place", small) != grpc.StatusCode.PERMISSION_DENIED
    assert call(port, "/things.v1.Orders/Place", large) == grpc.StatusCode.PERMISSION_DENIED


def test_a_broken_descriptor_file_stops_serve_with_the_key_named(tmp_path):
    data = init(tmp_path, POLICY)
    (data / "api.pb").write_bytes(b"\x0a\xff\xff not a descriptor set")
    p = run("serve", "--dir", data, env={"ESM_AUTHZ_PROTO_DESCRIPTOR": "api.pb"}, check=False)
    assert p.returncode == 2, p.stderr
    assert "authz.proto_descriptor" in p.stderr and "FileDescriptorSet" in p.stderr, p.stderr


def test_skip_request_body_parse_lets_a_policy_that_reads_no_body_decide_a_malformed_one(tmp_path, stack):
    esm, envoy, up = stack
    data = init(tmp_path, SKIP_POLICY)
    bad_json = b'{"unterminated'
    _, authz, _ = esm(data, {})
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port))
    # Parsed, a body that is not what its content type says denies whatever the policy.
    assert request(port, "POST", "/x", {"content-type": "application/json"}, bad_json)[0] == 403
    skipping = init(tmp_path, SKIP_POLICY, "skip")
    _, authz2, _ = esm(skipping, {"ESM_AUTHZ_SKIP_REQUEST_BODY_PARSE": "true"})
    port2 = free_port()
    envoy(bootstrap(free_port(), authz2, up, http_port=port2))
    assert request(port2, "POST", "/x", {"content-type": "application/json"}, bad_json)[0] == 200
