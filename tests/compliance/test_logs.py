"""`[telemetry] log_format`: JSON logs are one JSON object per line, each field under its
dotted name at the top level; text stays the default."""

import json
import time

from conftest import run

TD = "example.org"


def serve_log(tmp_path, stack, env):
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    _, _, admin = esm(data, env)
    log = tmp_path / f"esm-{admin}.log"
    deadline = time.monotonic() + 10
    while "SDS serving" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return log.read_text()


def test_json_logs_are_one_object_per_line_with_dotted_fields(tmp_path, stack):
    text = serve_log(tmp_path, stack, {"ESM_TELEMETRY_LOG_FORMAT": "json"})
    lines = text.splitlines()
    assert lines
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) and {"timestamp", "level", "target", "message"} <= o.keys()
               for o in objects), objects
    loaded = [o for o in objects if o["message"] == "policy loaded"]
    assert len(loaded) == 1, objects
    assert loaded[0]["policy.set"] == "default"
    assert len(loaded[0]["policy.hash"]) == 64
    assert loaded[0]["level"] == "INFO"


def test_text_logs_are_the_default(tmp_path, stack):
    text = serve_log(tmp_path, stack, {})
    assert "policy loaded policy.set=default" in text
    assert not text.lstrip().startswith("{")


def test_an_unknown_log_format_is_refused_and_named(tmp_path):
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    p = run("ca", "show", "--dir", data, env={"ESM_TELEMETRY_LOG_FORMAT": "yaml"}, check=False)
    assert p.returncode != 0
    assert "telemetry.log_format" in p.stderr and "yaml" in p.stderr


def test_check_span_carries_the_trace_id_envoy_sent(tmp_path, stack):
    from envoy_harness import bootstrap, free_port, request

    esm, envoy, up = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    certs = {}
    for name in ("api", "web"):
        out = tmp_path / name
        run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/ns/prod/sa/{name}", "--out", out, "--dir", data)
        certs[name] = {"cert": out / "svid.pem", "key": out / "svid.key", "ca": out / "bundle.pem"}
    _, authz, admin = esm(data, {"ESM_TELEMETRY_LOG_FORMAT": "json", "ESM_LOG": "info,esm_authz=debug"})
    port = free_port()
    api = certs["api"]
    envoy(bootstrap(free_port(), authz, up, http_port=port, tls=(api["cert"], api["key"], api["ca"])))
    w3c = "4bf92f3577b34da6a3ce929d0e0e4736"
    b3 = "80f198ee56343ba864fe8b2a57d3eff7"
    assert request(port, "GET", "/items/7", tls=certs["web"],
                   headers={"traceparent": f"00-{w3c}-00f067aa0ba902b7-01"})[0] == 200
    assert request(port, "GET", "/items/8", tls=certs["web"], headers={"x-b3-traceid": b3})[0] == 200
    assert request(port, "GET", "/items/9", tls=certs["web"], headers={"traceparent": "junk"})[0] == 200
    time.sleep(0.5)
    log = (tmp_path / f"esm-{admin}.log").read_text()
    decisions = [o for o in map(json.loads, log.splitlines()) if o["message"] == "authz decision"]
    ids = [o.get("span", {}).get("trace.id") for o in decisions]
    assert ids == [w3c, b3, ""], decisions
