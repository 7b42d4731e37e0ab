"""The audit actor of an admin API change is the admin socket peer's uid as the kernel
reports it (SO_PEERCRED), not what the client says: a client that forges the actor header
is recorded under its real uid, and its claim appears only as details.claimed_actor."""

import json
import os
import pwd
import socket

from conftest import run
from envoy_harness import wait_path

TD = "example.org"


def admin_call(sock, method, path, body, headers):
    """One raw HTTP/1.1 exchange on the admin socket; returns (status, body)."""
    raw = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", "host: esm", "connection: close",
            "content-type: application/json", f"content-length: {len(raw)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + raw)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    text = b"".join(chunks).decode()
    status = int(text.split(" ", 2)[1])
    return status, text.split("\r\n\r\n", 1)[1]


def test_forged_actor_header_is_only_a_note_beside_the_peer_uid(tmp_path, stack):
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    proc, _, _ = esm(data)
    # The admin socket is bound after the ext_authz port the fixture waits for.
    wait_path(data / "admin.sock", proc)
    uid = os.getuid()
    expected = f"admin-socket:uid:{uid}({pwd.getpwuid(uid).pw_name})"
    forged = "cli:uid:1000(alice)"
    status, body = admin_call(data / "admin.sock", "POST", "/v1/entries",
                              {"spiffe_id": f"spiffe://{TD}/web", "selectors": ["unix:uid:1000"]},
                              {"x-esm-actor": forged})
    assert status == 201, body
    entry = json.loads(body)
    status, _ = admin_call(data / "admin.sock", "DELETE", f"/v1/entries/{entry['id']}", None,
                           {"x-esm-actor": "admin-socket:uid:1000"})
    assert status == 204
    # The CLI sends its own header; without any header the actor is just as exact.
    run("entry", "create", "--spiffe-id", f"spiffe://{TD}/db", "--selector", "unix:uid:2000", "--dir", data)
    status, _ = admin_call(data / "admin.sock", "POST", "/v1/entries",
                           {"spiffe_id": f"spiffe://{TD}/cache", "selectors": ["unix:uid:3000"]}, {})
    assert status == 201

    log = [json.loads(l) for l in run("audit", "tail", "-n", "20", "--dir", data).stdout.splitlines()]
    changes = [e for e in log if e["kind"] in ("entry.created", "entry.deleted")]
    assert len(changes) == 4, changes
    for e in changes:
        assert e["actor"] == expected, e
        assert e["details"]["peer.uid"] == uid
        assert e["details"]["peer.pid"] > 0
    created, deleted, by_cli, bare = changes
    assert created["details"]["claimed_actor"] == forged
    assert deleted["details"]["claimed_actor"] == "admin-socket:uid:1000"
    assert by_cli["details"]["claimed_actor"] == f"cli:uid:{uid}"
    assert "claimed_actor" not in bare["details"]
    assert not any(forged in e["actor"] or "uid:1000" in e["actor"] for e in log)
