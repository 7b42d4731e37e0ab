"""`esm audit …` on a real data dir, on SQLite and on the machine's PostgreSQL: the CLI's own
events land in the log, proofs and exports verify offline, and every kind of direct edit of
the database is caught by `esm audit verify` (exit 1, naming the sequence number)."""

import json
import os
import secrets
import shutil
import subprocess

import pytest

from conftest import run

PG_URL = os.environ.get("ESM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


class SqliteStore:
    def __init__(self, data):
        self.data = data
        self.env = {}

    def sql(self, statement):
        import sqlite3

        c = sqlite3.connect(self.data / "audit.db")
        try:
            c.executescript(statement)
            c.commit()
        finally:
            c.close()

    def tamper(self, statement):
        # An attacker with the file drops the append-only triggers first.
        triggers = ["events_no_update", "events_no_delete", "checkpoints_no_update",
                    "checkpoints_no_delete", "anchor_needs_checkpoint", "anchor_needs_statement"]
        self.sql("".join(f"DROP TRIGGER IF EXISTS {t};" for t in triggers) + statement)

    def cleanup(self):
        pass


class PostgresStore:
    def __init__(self, data):
        self.data = data
        self.schema = "esm_cli_" + secrets.token_hex(5)
        self.env = {"ESM_AUDIT_URL": PG_URL, "ESM_AUDIT_SCHEMA": self.schema}

    def sql(self, statement):
        subprocess.run(
            ["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-q", "-c",
             f"SET search_path TO {self.schema}; {statement}"],
            check=True, capture_output=True, text=True, timeout=30)

    def tamper(self, statement):
        # A superuser session: disable the user triggers, then edit.
        self.sql("ALTER TABLE events DISABLE TRIGGER USER; "
                 "ALTER TABLE checkpoints DISABLE TRIGGER USER; "
                 "ALTER TABLE retention_anchor DISABLE TRIGGER USER; " + statement)

    def cleanup(self):
        subprocess.run(["psql", PG_URL, "-q", "-c", f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"],
                       capture_output=True, timeout=30)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path, esm_bin):
    data = tmp_path / "esm-data"
    s = SqliteStore(data) if request.param == "sqlite" else PostgresStore(data)
    run("init", "--trust-domain", "example.org", "--dir", data, env=s.env)
    # Events 2..4: two issuances and a rotation step, each from its own process.
    run("cert", "issue", "--spiffe-id", "spiffe://example.org/a", "--out", tmp_path / "a",
        "--dir", data, env=s.env)
    run("cert", "issue", "--spiffe-id", "spiffe://example.org/b", "--out", tmp_path / "b",
        "--dir", data, env=s.env)
    run("ca", "rotate", "prepare", "--dir", data, env=s.env)
    yield s
    s.cleanup()


def esm(store, *args, check=True):
    return run(*args, "--dir", store.data, env=store.env, check=check)


def records(store):
    out = esm(store, "audit", "tail", "-n", "100").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_cli_commands_are_recorded_and_verify(store):
    kinds = [(r["seq"], r["kind"], r["subject"]) for r in records(store)]
    assert kinds == [
        (1, "ca.initialized", "spiffe://example.org"),
        (2, "svid.issued", "spiffe://example.org/a"),
        (3, "svid.issued", "spiffe://example.org/b"),
        (4, "ca.rotated", "spiffe://example.org"),
    ]
    p = esm(store, "audit", "verify")
    assert p.stdout.startswith("ok: events 1..4 verify (4 events")


def test_issued_event_names_serial_and_no_key_material(store, tmp_path):
    r = records(store)[1]
    assert r["actor"].startswith("cli:uid:")
    assert r["outcome"] == "success"
    assert len(r["details"]["serial"]) == 32
    key = (tmp_path / "a" / "svid.key").read_text()
    body = key.split("-----")[2].strip().splitlines()[0]
    assert body not in json.dumps(records(store))


@pytest.mark.parametrize("statement,seq", [
    ("UPDATE events SET subject = 'spiffe://example.org/evil' WHERE seq = 2", 2),
    ("DELETE FROM events WHERE seq = 3", 3),
    ("DELETE FROM events WHERE seq = 4", 4),
    ("UPDATE events SET seq = seq + 100 WHERE seq IN (2, 3); "
     "UPDATE events SET seq = 3 WHERE seq = 102; UPDATE events SET seq = 2 WHERE seq = 103", 2),
], ids=["update", "delete", "truncate-tail", "swap"])
def test_verify_names_the_first_tampered_sequence(store, statement, seq):
    store.tamper(statement)
    p = esm(store, "audit", "verify", check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"sequence {seq}" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_verify_catches_an_inserted_event(store):
    prev = records(store)[-1]["hash"]
    hexval = "'\\x" if isinstance(store, PostgresStore) else "X'"
    fake = "0" * 64
    store.tamper(
        "INSERT INTO events (seq, time_ns, kind, actor, subject, action, outcome, reason, "
        "correlation_id, node, details, prev_hash, hash) VALUES (5, 1, 'svid.issued', 'x', "
        f"'spiffe://example.org/evil', 'issue', 'success', '', '', '', '{{}}', "
        f"{hexval}{prev}', {hexval}{fake}')")
    p = esm(store, "audit", "verify", check=False)
    assert p.returncode == 1
    assert "sequence 5" in p.stderr


def test_verify_catches_a_forged_checkpoint_signature(store):
    store.tamper("UPDATE checkpoints SET signature = root WHERE tree_size = 2")
    p = esm(store, "audit", "verify", check=False)
    assert p.returncode == 1
    assert "sequence 2" in p.stderr


@pytest.mark.parametrize("remove", ["checkpoint.key", "hmac.key"])
def test_a_deleted_audit_key_is_not_remade(store, tmp_path, remove):
    """The attack: delete the log's key so that esm makes a new one and signs on under it."""
    (store.data / "audit" / remove).unlink()
    p = esm(store, "cert", "issue", "--spiffe-id", "spiffe://example.org/c", "--out",
            tmp_path / "c", check=False)
    assert p.returncode != 0 and "restore the key" in p.stderr, p.stderr
    assert not (store.data / "audit" / remove).exists()
    assert not (tmp_path / "c" / "svid.pem").exists()
    assert [r["seq"] for r in records(store)] == [1, 2, 3, 4]
    assert esm(store, "audit", "verify").stdout.startswith("ok: events 1..4 verify")


def test_a_swapped_audit_key_is_refused(store, tmp_path):
    other = tmp_path / "other"
    run("init", "--trust-domain", "example.org", "--dir", other)
    shutil.copy(other / "audit" / "checkpoint.key", store.data / "audit" / "checkpoint.key")
    p = esm(store, "cert", "issue", "--spiffe-id", "spiffe://example.org/c", "--out",
            tmp_path / "c", check=False)
    assert p.returncode != 0 and "not the private half" in p.stderr, p.stderr
    assert [r["seq"] for r in records(store)] == [1, 2, 3, 4]


def test_database_refuses_update_and_delete(store):
    for statement in ("UPDATE events SET reason = 'x' WHERE seq = 1",
                      "DELETE FROM events WHERE seq = 1"):
        with pytest.raises((subprocess.CalledProcessError, Exception)):
            store.sql(statement)
    assert esm(store, "audit", "verify").returncode == 0


def test_inclusion_and_consistency_proofs_verify_offline(store, tmp_path):
    proof = tmp_path / "inclusion.json"
    proof.write_text(esm(store, "audit", "prove", "2").stdout)
    key = tmp_path / "audit.pub"
    key.write_text(esm(store, "audit", "key").stdout)
    p = run("audit", "verify-proof", proof, "--public-key", key, "--dir", store.data, env=store.env)
    assert "event 2 is in the log" in p.stdout

    cons = tmp_path / "consistency.json"
    cons.write_text(esm(store, "audit", "consistency", "1").stdout)
    p = run("audit", "verify-proof", cons, "--public-key", key, "--dir", store.data, env=store.env)
    assert "extends the log of 1 events" in p.stdout

    # A proof edited to claim another event fails.
    doc = json.loads(proof.read_text())
    doc["seq"] = 3
    proof.write_text(json.dumps(doc))
    p = run("audit", "verify-proof", proof, "--public-key", key, "--dir", store.data,
            env=store.env, check=False)
    assert p.returncode == 1


def test_export_verifies_offline_and_an_edit_is_caught(store, tmp_path):
    out = tmp_path / "audit.jsonl"
    esm(store, "audit", "export", "--format", "jsonl", "--out", out)
    assert "ok: export" in esm(store, "audit", "verify", "--export", out).stdout
    lines = out.read_text().splitlines()
    edited = [line.replace("spiffe://example.org/b", "spiffe://example.org/c") for line in lines]
    out.write_text("\n".join(edited) + "\n")
    p = esm(store, "audit", "verify", "--export", out, check=False)
    assert p.returncode == 1
    assert "sequence 3" in p.stderr


def test_export_filters_by_kind_and_time(store):
    p = esm(store, "audit", "export", "--kind", "svid.issued", "--from", "2000-01-01")
    subjects = [json.loads(line)["subject"] for line in p.stdout.splitlines()]
    assert subjects == ["spiffe://example.org/a", "spiffe://example.org/b"]
    p = esm(store, "audit", "export", "--to", "2000-01-01")
    assert p.stdout == ""


def test_retention_keeps_a_verifiable_anchor(store):
    p = esm(store, "audit", "retain", "--before", "2999-01-01")
    assert "new anchor" in p.stdout
    rec = records(store)
    assert rec[-1]["kind"] == "audit.retention"
    assert rec[-1]["details"]["first_kept"] == rec[0]["seq"] > 1
    assert rec[-1]["actor"].startswith("cli:uid:")
    assert "anchored at 4 after retention signed in event 5" in esm(store, "audit", "verify").stdout


def external_key(store, tmp_path):
    """The audit public key, as kept off the box before any attack."""
    key = tmp_path / "audit-offbox.pub"
    key.write_text(esm(store, "audit", "key").stdout)
    return key


def assert_gap(store, key, upto):
    for args in (["--public-key", key], []):
        p = esm(store, "audit", "verify", *args, check=False)
        assert p.returncode == 1, p.stdout + p.stderr
        assert (f"sequence 1: events 1..{upto} missing: no signed retention statement covers them"
                in p.stderr), p.stderr


FORGED_RETENTION = ("INSERT INTO retention_anchor (up_to_seq, time_ns) VALUES ({n}, 0); "
                    "DELETE FROM events WHERE seq <= {n};")


def test_a_forged_anchor_row_does_not_erase_issued_svids(store, tmp_path):
    key = external_key(store, tmp_path)
    assert records(store)[1]["kind"] == "svid.issued"
    # esm's own database role: the anchor row and the DELETE are refused.
    for statement in (FORGED_RETENTION.format(n=3), "DELETE FROM events WHERE seq <= 3"):
        with pytest.raises(Exception):
            store.sql(statement)
    assert records(store)[0]["seq"] == 1
    # Root with the file, or a superuser, gets past the triggers; verify names the gap.
    store.tamper(FORGED_RETENTION.format(n=3))
    assert records(store)[0]["seq"] == 4
    assert_gap(store, key, 3)


def test_deleting_past_a_genuine_retention_is_caught(store, tmp_path):
    key = external_key(store, tmp_path)
    esm(store, "audit", "retain", "--before", "2999-01-01")
    for name in ("c", "d"):
        esm(store, "cert", "issue", "--spiffe-id", f"spiffe://example.org/{name}", "--out",
            tmp_path / name)
    assert "ok: events 5..7 verify" in esm(store, "audit", "verify", "--public-key", key).stdout
    with pytest.raises(Exception):
        store.sql(FORGED_RETENTION.format(n=6))
    store.tamper(FORGED_RETENTION.format(n=6))
    assert_gap(store, key, 6)


@pytest.mark.parametrize("args", [
    ["audit", "export", "--from", "yesterday"],
    ["audit", "export", "--format", "csv"],
    ["audit", "retain", "--before", "not-a-date"],
    ["audit", "prove", "-1"],
    ["audit", "prove", "999"],
    ["audit", "verify", "--from", "x"],
])
def test_bad_arguments_exit_2(store, args):
    p = esm(store, *args, check=False)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip()


@pytest.mark.parametrize("content", ["", "{", "x" * (2 << 20), '{"seq": 1}', "\udcff"])
def test_hostile_proof_files_are_refused(store, tmp_path, content):
    f = tmp_path / "proof.json"
    f.write_text(content, errors="surrogateescape")
    p = esm(store, "audit", "verify-proof", f, check=False)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_tail_follow_prints_new_events(store, tmp_path):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
    full_env.update(store.env)
    from conftest import ESM
    p = subprocess.Popen([str(ESM), "audit", "tail", "-n", "0", "--follow", "--dir", str(store.data)],
                         env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import select
        # `-n 0` starts after the events already there when tail has opened the store; on a
        # loaded machine that can be after the first issuance, so issue until one is printed.
        ready = []
        for i in range(10):
            esm(store, "cert", "issue", "--spiffe-id", f"spiffe://example.org/late{i}", "--out",
                tmp_path / f"late{i}")
            ready, _, _ = select.select([p.stdout], [], [], 3)
            if ready:
                break
        assert ready, "tail --follow printed nothing"
        line = json.loads(p.stdout.readline())
        assert line["subject"].startswith("spiffe://example.org/late")
    finally:
        p.kill()
        p.wait(timeout=10)


def tail_on_a_terminal(store, *args):
    """`esm audit tail` with stdout on a pseudo-terminal, as a person runs it: what it
    printed there. stderr stays a pipe, so only stdout decides the format."""
    from conftest import on_a_terminal

    code, err, out = on_a_terminal(["audit", "tail", *args, "--dir", store.data], "stdout",
                                   env=store.env, timeout=30)
    assert code == 0, err
    return out.replace("\r\n", "\n")


def test_tail_prints_readable_lines_on_a_terminal_and_json_with_flag_or_pipe(store):
    piped = records(store)
    assert len(piped) >= 4, piped                      # a pipe: JSON Lines
    lines = tail_on_a_terminal(store, "-n", "100").splitlines()
    assert len(lines) == len(piped), lines
    for line, event in zip(lines, piped):
        # Not JSON: one line naming time, sequence, kind, outcome, actor and subject.
        assert not line.startswith("{"), line
        assert line.startswith(f"{event['time']} #{event['seq']} {event['kind']} {event['outcome']} "), line
        assert f" -> {event['subject'] or '-'} " in line, line
    issued = [l for l, e in zip(lines, piped) if e["kind"] == "svid.issued"]
    assert any("spiffe://example.org/a" in l for l in issued), issued
    # --json on a terminal: the same JSON Lines as through a pipe.
    as_json = [json.loads(l) for l in tail_on_a_terminal(store, "-n", "100", "--json").splitlines()]
    assert as_json[:len(piped)] == piped
