"""`esm entry import`: hostile and malformed files are refused whole, naming the line, by
the CLI and by the admin API itself (a client that skips the CLI's checks); standard input
works; the same file twice adds nothing. On a terminal the import draws its progress; each
entry it adds is audited once, across its batches, and a repeat audits nothing."""

import json
import os
import re
import socket

import pytest

from conftest import run
from envoy_harness import wait_path

TD = "example.org"


def ok_line(n):
    return json.dumps({"spiffe_id": f"spiffe://{TD}/imp/{n}", "selectors": [f"unix:uid:{n}"]})


def listed(data):
    return [json.loads(l) for l in run("entry", "list", "--dir", data).stdout.splitlines()]


@pytest.fixture
def served(tmp_path, stack):
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    serve, _, _ = esm(data)
    wait_path(data / "admin.sock", serve)
    return data


BAD = [
    (b'{"spiffe_id": "spiffe://example.org/x", "selectors": ["unix:uid:1"]}\xff\n', "not UTF-8"),
    (('{"spiffe_id": "spiffe://example.org/x", "selectors": ["unix:path:/' + "a" * 70000 + '"]}\n')
     .encode(), "longer than 64 KiB"),
    (json.dumps({"spiffe_id": "http://example.org/x", "selectors": ["unix:uid:1"]}).encode() + b"\n",
     "spiffe"),
    (json.dumps({"spiffe_id": f"spiffe://{TD}/x",
                 "selectors": [f"unix:uid:{n}" for n in range(33)]}).encode() + b"\n", "selectors"),
    (b"[1, 2]\n", "not a JSON object"),
    (b'{"spiffe_id": "spiffe://example.org/x", "selectors": ["unix:uid:1"], "root": true}\n',
     "unknown field"),
]


@pytest.mark.parametrize("bad,why", BAD, ids=[w for _, w in BAD])
def test_a_bad_line_refuses_the_whole_file_naming_it(tmp_path, served, bad, why):
    f = tmp_path / "bad.jsonl"
    f.write_bytes((ok_line(1) + "\n" + ok_line(2) + "\n").encode() + bad + (ok_line(3) + "\n").encode())
    p = run("entry", "import", f, "--dir", served, check=False)
    assert p.returncode == 2, p.stderr
    assert "line 3" in p.stderr and why.lower() in p.stderr.lower(), p.stderr
    assert listed(served) == [], "nothing written, not even the lines before"


def admin_post(data, body):
    """POST /v1/entries/import straight to the admin socket, past the CLI's checks."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(data / "admin.sock"))
    s.sendall(b"POST /v1/entries/import HTTP/1.1\r\nhost: esm\r\nconnection: close\r\n"
              b"content-length: %d\r\n\r\n" % len(body) + body)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return int(out.split(b" ", 2)[1]), out


@pytest.mark.parametrize("bad,why", BAD, ids=[w for _, w in BAD])
def test_the_admin_api_refuses_a_bad_line_itself(served, bad, why):
    status, out = admin_post(served, (ok_line(1) + "\n").encode() + bad)
    assert status == 422, out[:300]
    assert b"line 2" in out and why.lower().encode() in out.lower(), out[:300]
    assert listed(served) == []


def test_stdin_import_is_idempotent_and_progress_stays_off_a_pipe(served):
    text = "".join(ok_line(n) + "\n" for n in range(2500)) + "\n"
    p = run("entry", "import", "-", "--dir", served, input=text)
    assert p.stdout == ""
    assert p.stderr.strip().endswith("imported 2500 entries (0 already present)"), p.stderr
    assert "\r" not in p.stderr
    p = run("entry", "import", "-", "--dir", served, input=text)
    assert "imported 0 entries (2500 already present)" in p.stderr
    got = listed(served)
    assert len(got) == 2500 and len({e["id"] for e in got}) == 2500


def test_an_empty_file_is_refused(tmp_path, served):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n  \n")
    p = run("entry", "import", f, "--dir", served, check=False)
    assert p.returncode == 2 and "no entries" in p.stderr


def test_two_imports_of_the_same_file_at_once_write_each_entry_once(tmp_path, served):
    import subprocess
    from conftest import ESM
    f = tmp_path / "same.jsonl"
    f.write_text("".join(ok_line(n) + "\n" for n in range(3000)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
    procs = [subprocess.Popen([str(ESM), "entry", "import", str(f), "--dir", str(served)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(o[1].strip().splitlines()[-1] for o in outs) == [
        "imported 0 entries (3000 already present)", "imported 3000 entries (0 already present)"]
    got = listed(served)
    assert len(got) == 3000 and len({e["spiffe_id"] for e in got}) == 3000


def import_on_a_terminal(data, f):
    """`esm entry import F` with stderr on a pseudo-terminal, as a person runs it: the exit
    status, what it wrote to stdout (a pipe), and what it drew on the terminal, raw."""
    from conftest import on_a_terminal

    return on_a_terminal(["entry", "import", f, "--dir", data], "stderr")


# More than one transaction of the server's import (`entry_import::BATCH`, 2,000 entries).
MANY = 5000


def test_import_on_a_terminal_draws_its_progress_in_place(tmp_path, served):
    f = tmp_path / "many.jsonl"
    f.write_text("".join(ok_line(n) + "\n" for n in range(MANY)))
    code, out, drawn = import_on_a_terminal(served, f)
    assert code == 0, drawn
    assert out == ""
    # One line per committed transaction, each drawn over the last with a carriage return,
    # then the outcome on a line of its own (the terminal shows "\n" as "\r\n").
    progress = [int(n) for n in re.findall(rf"\rimported (\d+) of {MANY}", drawn)]
    assert progress == [2000, 4000, MANY], drawn
    assert drawn.endswith(f"imported {MANY} of {MANY}\r\nimported {MANY} entries "
                          f"(0 already present)\r\n"), drawn
    got = listed(served)
    assert len(got) == MANY and {e["spiffe_id"] for e in got} == {
        f"spiffe://{TD}/imp/{n}" for n in range(MANY)}


def audit_events(data):
    """Every event of the audit log, as `esm audit export` writes them."""
    p = run("audit", "export", "--dir", data)
    return [v for v in map(json.loads, p.stdout.splitlines()) if "kind" in v]


def test_an_import_audits_each_entry_once_across_its_batches_and_a_repeat_none(tmp_path, served):
    f = tmp_path / "many.jsonl"
    f.write_text("".join(ok_line(n) + "\n" for n in range(MANY)))
    before = audit_events(served)
    assert not [e for e in before if e["kind"].startswith("entry.")], before
    p = run("entry", "import", f, "--dir", served)
    assert p.stderr.strip().endswith(f"imported {MANY} entries (0 already present)"), p.stderr

    events = audit_events(served)
    created = [e for e in events if e["kind"] == "entry.created"]
    # Exactly one record per imported entry, naming its SPIFFE ID and its id in the store.
    assert len(created) == MANY
    assert sorted(e["subject"] for e in created) == sorted(f"spiffe://{TD}/imp/{n}" for n in range(MANY))
    assert all(e["outcome"] == "success" and e["action"] == "import" for e in created), created[0]
    ids = {e["spiffe_id"]: e["id"] for e in listed(served)}
    assert {e["subject"]: e["details"]["entry.id"] for e in created} == ids
    for e in created:
        n = int(e["subject"].rsplit("/", 1)[1])
        assert e["details"]["selectors"] == [f"unix:uid:{n}"], e
    assert not [e for e in events if e["kind"].startswith("entry.") and e["kind"] != "entry.created"]

    # The same file again adds nothing, so it records no change either.
    p = run("entry", "import", f, "--dir", served)
    assert f"imported 0 entries ({MANY} already present)" in p.stderr
    again = audit_events(served)
    assert [e for e in again if e["kind"].startswith("entry.")] == [
        e for e in events if e["kind"].startswith("entry.")]

    v = run("audit", "verify", "--dir", served)
    assert v.stdout.startswith("ok: events 1.."), v.stdout
