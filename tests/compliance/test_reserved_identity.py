"""esm's own identities (spiffe://<td>/esm and everything under it; the agent's TCP listener
is spiffe://<td>/esm/agent, which remote Envoys pin) are never granted to a workload: not by
`esm entry create`, not by `esm entry import`, not by `esm cert issue` with or without a CSR.
Each attempt is refused with a one-line reason (exit 1), leaves nothing behind, and is in
the audit log as a failure under the real caller."""

import json
import os
import pwd
import subprocess

import pytest

from conftest import run

TD = "example.org"
RESERVED = [f"spiffe://{TD}/esm/agent", f"spiffe://{TD}/esm", f"spiffe://{TD}/esm/agent/x"]


def refused(p):
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    errors = [l for l in p.stderr.splitlines() if l.startswith("esm: error:")]
    assert len(errors) == 1, p.stderr
    assert "reserved" in errors[0] and "esm's own identities" in errors[0], errors[0]
    return errors[0]


def attempts(data, spiffe_id):
    """The audit records of refused attempts to make an entry for `spiffe_id`."""
    log = [json.loads(l) for l in run("audit", "tail", "-n", "50", "--dir", data).stdout.splitlines()]
    return [e for e in log if e["kind"] == "entry.created" and e["subject"] == spiffe_id
            and e["outcome"] == "failure"]


def me():
    return f"admin-socket:uid:{os.getuid()}({pwd.getpwuid(os.getuid()).pw_name})"


def entries(data):
    out = run("entry", "list", "--dir", data).stdout
    return [json.loads(l) for l in out.splitlines() if l.strip()]


@pytest.fixture
def served(tmp_path, stack):
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    esm(data)
    return data


@pytest.mark.parametrize("spiffe_id", RESERVED)
def test_entry_create_for_esms_own_identity_is_refused(served, spiffe_id):
    p = run("entry", "create", "--spiffe-id", spiffe_id, "--selector", "unix:uid:65534",
            "--dir", served, check=False)
    assert spiffe_id in refused(p)
    assert entries(served) == []
    [attempt] = attempts(served, spiffe_id)
    assert attempt["actor"] == me() and attempt["action"] == "create"
    assert "reserved" in attempt["reason"]
    # A look-alike outside /esm is an ordinary workload ID.
    run("entry", "create", "--spiffe-id", f"spiffe://{TD}/esmx/agent", "--selector", "unix:uid:65534",
        "--dir", served)


def test_entry_import_smuggling_esms_identity_is_refused_whole(tmp_path, served):
    f = tmp_path / "entries.jsonl"
    lines = [
        {"spiffe_id": f"spiffe://{TD}/web", "selectors": ["unix:uid:1000"]},
        {"id": "00ff", "spiffe_id": RESERVED[0], "selectors": ["unix:uid:65534"], "ttl_secs": None,
         "dns_names": [], "created_at": "2026-01-01T00:00:00Z"},
    ]
    f.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    assert RESERVED[0] in refused(run("entry", "import", f, "--dir", served, check=False))
    assert entries(served) == [], "not even the ordinary entry before it"
    [attempt] = attempts(served, RESERVED[0])
    assert attempt["actor"] == me() and attempt["action"] == "import"
    # The same file without the reserved line imports, and round-trips through `entry list`.
    f.write_text(json.dumps(lines[0]) + "\n")
    run("entry", "import", f, "--dir", served)
    listed = entries(served)
    assert [e["spiffe_id"] for e in listed] == [f"spiffe://{TD}/web"]
    again = tmp_path / "again.jsonl"
    again.write_text("".join(json.dumps(e) + "\n" for e in listed))
    # Importing what `entry list` printed again adds nothing: existing entries are left alone.
    p = run("entry", "import", again, "--dir", served)
    assert "imported 0 entries (1 already present)" in p.stderr, p.stderr
    assert entries(served) == listed


def csr_for(tmp_path, spiffe_id):
    csr = tmp_path / "agent.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(tmp_path / "agent.key"), "-subj", "/O=x", "-addext", f"subjectAltName=URI:{spiffe_id}",
         "-outform", "DER", "-out", str(csr)],
        check=True, capture_output=True, timeout=60,
    )
    return csr


@pytest.mark.parametrize("with_csr", [False, True], ids=["esm-made-key", "csr"])
def test_cert_issue_for_esms_agent_identity_is_refused_and_recorded(tmp_path, ca, with_csr):
    out = tmp_path / "out"
    args = ["cert", "issue", "--spiffe-id", RESERVED[0], "--out", out, "--dir", ca]
    if with_csr:
        args += ["--csr", csr_for(tmp_path, RESERVED[0])]
    assert RESERVED[0] in refused(run(*args, check=False))
    assert not out.exists()
    log = [json.loads(l) for l in run("audit", "tail", "-n", "10", "--dir", ca).stdout.splitlines()]
    about = [e for e in log if e["subject"] == RESERVED[0]]
    assert [(e["kind"], e["outcome"]) for e in about] == [("svid.issued", "failure")], about
    assert "reserved" in about[0]["reason"]
