"""CA keys in a PKCS#11 token (real SoftHSM2, read back with OpenSC's pkcs11-tool): init,
issuance, rotation and SDS to real Envoys sign with the token; the keys are sensitive and
never extractable; no private key of the CA lands in the data dir; the PIN is never written
down; a wrong PIN, a missing module and a missing token fail in one line and write nothing.
The audit checkpoint key in the token signs the log, and a log rewritten and re-signed by
root on the host (who cannot read that key) fails verification."""

import json
import os
import re
import sqlite3
import subprocess
import tomllib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import X509Svid

import audit_forger
from conftest import run
from envoy_harness import envoy_bin, free_port, request, stop_process, wait_path
from test_sds_envoy import CLIENT, SERVER, client_envoy, linked_envoy, server_envoy
from test_svid_checkers import openssl_verify, pkilint_findings, split_pem

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "246810"
TD = "example.org"


@pytest.fixture
def hsm(tmp_path):
    """A throwaway SoftHSM2 token dir with one token; returns the environment to reach it."""
    assert os.path.exists(MODULE), "softhsm2 missing: apt-get install softhsm2 opensc (tests/run does)"
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "esm-ca", "--pin", PIN,
                    "--so-pin", "13579111"], env={**os.environ, **env}, check=True,
                   capture_output=True, timeout=30)
    return env


def init_args(data, module=MODULE, token="esm-ca"):
    return ["init", "--trust-domain", TD, "--dir", data, "--key-backend", "pkcs11",
            "--pkcs11-module", module, "--pkcs11-token", token]


def private_key_access(hsm_env):
    """The Access line of every private key object in the token, by label."""
    p = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", "esm-ca", "--login",
                        "--pin", PIN, "--list-objects"], env={**os.environ, **hsm_env},
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    out = {}
    for block in p.stdout.split("Private Key Object")[1:]:
        label = re.search(r"label:\s+(\S+)", block).group(1)
        out[label] = re.search(r"Access:\s+(.*)", block).group(1).strip()
    return out


def no_private_key_under(data):
    for root, _, files in os.walk(data):
        for f in files:
            path = os.path.join(root, f)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as fh:
                assert b"PRIVATE KEY" not in fh.read(), path


def check_svid(tmp_path, out):
    svid = X509Svid.load(str(out / "svid.pem"), str(out / "svid.key"), Encoding.PEM)
    assert len(svid.cert_chain) == 2
    leaf_pem, inter_pem = split_pem(out / "svid.pem")
    (tmp_path / "leaf.pem").write_text(leaf_pem)
    (tmp_path / "inter.pem").write_text(inter_pem)
    (tmp_path / "root.pem").write_text(split_pem(out / "bundle.pem")[-1])
    for name in ["leaf", "inter", "root"]:
        assert pkilint_findings(tmp_path / f"{name}.pem") == [], name
    for purpose in ["sslserver", "sslclient"]:
        v = openssl_verify(out / "bundle.pem", tmp_path / "inter.pem", tmp_path / "leaf.pem", purpose)
        assert v.returncode == 0, v.stdout + v.stderr


def audit_events(data, env, kind):
    out = run("audit", "tail", "-n", "1000", "--dir", data, env=env).stdout
    return [json.loads(l) for l in out.splitlines() if f'"{kind}"' in l]


def test_pkcs11_ca_issues_rotates_and_serves_envoy_with_keys_that_never_leave_the_token(
        tmp_path, stack, hsm):
    esm, envoy, up = stack
    env = {**hsm, "ESM_PKCS11_PIN": PIN}
    data = tmp_path / "d"
    run(*init_args(data), env=env)
    toml = (data / "esm.toml").read_text()
    assert 'key_backend = "pkcs11"' in toml and "[ca.pkcs11]" in toml and PIN not in toml

    out = tmp_path / "out1"
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/ns/prod/web", "--out", out, "--dir", data, env=env)
    check_svid(tmp_path, out)

    run("ca", "rotate", "prepare", "--dir", data, env=env)
    run("ca", "rotate", "activate", "--dir", data, env=env)
    out = tmp_path / "out2"
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/ns/prod/web", "--out", out, "--dir", data, env=env)
    check_svid(tmp_path, out)

    # Every CA key is in the token, made there, and cannot leave it.
    access = private_key_access(hsm)
    assert len(access) == 3, access  # root, first and second intermediate
    for label, line in access.items():
        assert label.startswith("esm-")
        assert "sensitive, always sensitive, never extractable, local" in line, (label, line)
    no_private_key_under(data)

    # Custody in the audit log, read back from the token.
    init_ev = audit_events(data, env, "ca.initialized")[0]
    rotated = audit_events(data, env, "ca.rotated")
    assert len(rotated) == 2
    for ev in [init_ev, *rotated]:
        kb = ev["details"]["key_backend"]
        for role in ["root", "signing"]:
            k = kb[role]
            assert k["backend"] == "pkcs11" and k["token_label"] == "esm-ca", kb
            assert k["sensitive"] is True and k["extractable"] is False and k["never_extractable"] is True
            assert k["token_object"] is True and k["local"] is True and k["always_sensitive"] is True
            assert k["key_label"] in access
    shown = run("ca", "show", "--dir", data).stdout  # needs no PIN
    assert 'root keys     pkcs11 (token "esm-ca"' in shown
    assert 'signing keys  pkcs11 (token "esm-ca"' in shown

    # serve: SDS to two real Envoys, every SVID signed in the token.
    esm(data, env)
    sock = data / "agent.sock"
    uid = os.getuid()
    server_exe = os.path.realpath(envoy_bin())
    client_exe = os.path.realpath(linked_envoy(tmp_path, "envoy-client"))
    run("entry", "create", "--spiffe-id", SERVER, "--selector", f"unix:uid:{uid}",
        "--selector", f"unix:path:{server_exe}", "--dir", data, env=env)
    run("entry", "create", "--spiffe-id", CLIENT, "--selector", f"unix:uid:{uid}",
        "--selector", f"unix:path:{client_exe}", "--dir", data, env=env)
    server_port, client_port = free_port(), free_port()
    envoy(server_envoy(free_port(), server_port, up, sock), node="server")
    envoy(client_envoy(free_port(), client_port, server_port, sock), exe=client_exe, node="client")
    status, _, body = request(client_port, "GET", "/hello")
    assert status == 200, body
    issued = [e for e in audit_events(data, env, "svid.issued") if e["details"]["via"] == "sds"]
    assert {e["subject"] for e in issued} >= {SERVER, CLIENT}
    no_private_key_under(data)


def test_pin_file_is_referenced_not_copied_and_root_stays_in_token_with_file_signing_key(tmp_path, hsm):
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    data = tmp_path / "d"
    run(*init_args(data), "--pkcs11-pin-file", pin_file, env=hsm)
    toml = (data / "esm.toml").read_text()
    assert f'pin_file = "{pin_file}"' in toml
    for root, _, files in os.walk(data):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p):
                assert PIN.encode() not in open(p, "rb").read(), p
    # Keep the short-lived signing key local from the next rotation on.
    (data / "esm.toml").write_text(toml.replace('signing_key_backend = ""', 'signing_key_backend = "file"'))
    run("ca", "rotate", "prepare", "--dir", data, env=hsm)
    run("ca", "rotate", "activate", "--dir", data, env=hsm)
    state = json.loads((data / "ca" / "state.json").read_text())
    active = {a["kind"]: a for a in state["authorities"] if a["status"] == "active"}
    assert active["root"]["key_backend"] == "pkcs11"
    assert active["intermediate"]["key_backend"] == "file"
    out = tmp_path / "out"
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/w", "--out", out, "--dir", data, env=hsm)
    check_svid(tmp_path, out)
    kb = audit_events(data, hsm, "ca.rotated")[-1]["details"]["key_backend"]
    assert kb["root"]["backend"] == "pkcs11" and kb["root"]["never_extractable"] is True
    assert kb["signing"]["backend"] == "file"
    shown = run("ca", "show", "--dir", data).stdout
    assert "signing keys  file (" in shown and 'root keys     pkcs11 (token "esm-ca"' in shown


@pytest.mark.parametrize("case,expect", [
    ("wrong-pin", "wrong PIN"),
    ("missing-module", "no such file"),
    ("missing-token", 'no token labelled "nope"'),
])
@pytest.mark.parametrize("dir_exists", [False, True])
def test_init_failure_is_one_line_nonzero_and_writes_nothing(tmp_path, hsm, case, expect, dir_exists):
    data = tmp_path / "d"
    if dir_exists:
        data.mkdir()
    env = {**hsm, "ESM_PKCS11_PIN": "000000" if case == "wrong-pin" else PIN}
    args = init_args(data, module="/nonexistent/libpkcs11.so" if case == "missing-module" else MODULE,
                     token="nope" if case == "missing-token" else "esm-ca")
    p = run(*args, env=env, check=False)
    assert p.returncode != 0
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and expect in lines[0], p.stderr
    assert PIN not in p.stderr and "000000" not in p.stderr
    assert (not data.exists()) if not dir_exists else list(data.iterdir()) == []
    assert private_key_access(hsm) == {}


def test_pin_variable_does_not_break_the_file_backend(tmp_path):
    # Before: ESM_PKCS11_PIN was read as config key `pkcs11_pin` → "unknown field".
    data = tmp_path / "d"
    env = {"ESM_PKCS11_PIN": PIN}
    run("init", "--trust-domain", TD, "--dir", data, env=env)
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/w", "--out", tmp_path / "o", "--dir", data, env=env)


def events_through_serve(esm, data, env, out):
    """Events 2..4 with `esm serve` running: an entry over the admin socket, a CLI issuance
    (its own checkpoint) and another entry, which the server's final checkpoint covers."""
    p, _, _ = esm(data, env)
    wait_path(data / "admin.sock", p)
    run("entry", "create", "--spiffe-id", f"spiffe://{TD}/w", "--selector", "unix:uid:1000",
        "--dir", data, env=env)
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/w", "--out", out, "--dir", data, env=env)
    run("entry", "create", "--spiffe-id", f"spiffe://{TD}/v", "--selector", "unix:uid:1001",
        "--dir", data, env=env)
    stop_process(p)


def token_public_key(hsm_env, label, out):
    """A key's public half as the token itself gives it (PEM), not the data dir's copy."""
    p = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", "esm-ca", "--read-object",
                        "--type", "pubkey", "--label", label, "-o", out], env={**os.environ, **hsm_env},
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return out


def test_audit_checkpoint_key_in_the_token_signs_the_log_and_a_resigned_rewrite_fails(
        tmp_path, stack, hsm):
    esm, _, _ = stack
    env = {**hsm, "ESM_PKCS11_PIN": PIN}
    data = tmp_path / "d"
    run(*init_args(data), "--audit-key-backend", "pkcs11", env=env)
    assert tomllib.loads((data / "esm.toml").read_text())["audit"]["key_backend"] == "pkcs11"
    ref = json.loads((data / "audit" / "checkpoint-key.json").read_text())
    assert ref["backend"] == "pkcs11" and ref["algorithm"] == "ed25519", ref  # SoftHSM2 has CKM_EDDSA
    assert ref["key_id"].startswith("ed25519:")
    label = "esm-" + ref["backend_key_id"]
    assert "sensitive, always sensitive, never extractable, local" in private_key_access(hsm)[label]
    # Its custody is in the log's first event, read back from the token.
    custody = audit_events(data, env, "ca.initialized")[0]["details"]["key_backend"]["audit"]
    assert custody["backend"] == "pkcs11" and custody["key_label"] == label, custody
    assert custody["key_type"] == "ec-edwards" and custody["key_id"] == ref["key_id"]
    assert custody["never_extractable"] is True and custody["extractable"] is False
    assert "audit key     pkcs11 " + ref["backend_key_id"] in run("ca", "show", "--dir", data).stdout

    # The verifier's copy of the public key comes from the token itself.
    token_pem = token_public_key(hsm, label, tmp_path / "token.pem")

    events_through_serve(esm, data, env, tmp_path / "o")
    db = sqlite3.connect(data / "audit.db")
    key_ids = {r[0] for r in db.execute("SELECT key_id FROM checkpoints")}
    sizes = [r[0] for r in db.execute("SELECT tree_size FROM checkpoints")]
    db.close()
    # init's, the CLI issuance's and the server's final one.
    assert key_ids == {ref["key_id"]} and sizes == [1, 3, 4], (key_ids, sizes)
    issued = audit_events(data, env, "svid.issued")[-1]
    # Verifying needs neither the PIN nor the token (run() passes no SOFTHSM2_CONF).
    for key_args in [(), ("--public-key", token_pem)]:
        ok = run("audit", "verify", *key_args, "--dir", data)
        assert ok.stdout.startswith("ok:") and ref["key_id"] in ok.stdout, ok.stdout
    assert not (data / "audit" / "checkpoint.key").exists()
    no_private_key_under(data)

    # The attack: root rewrites whom the SVID went to, relinks the chain, re-signs every
    # checkpoint with a key of its own (the token's cannot be read) and puts that key's public
    # half where esm keeps one.
    attacker = Ed25519PrivateKey.generate()
    audit_forger.rewrite(data / "audit.db", issued["seq"], "subject", f"spiffe://{TD}/evil", attacker)
    (data / "audit" / "checkpoint.pub").write_text(audit_forger.key_text(attacker)[0])
    bad = run("audit", "verify", "--public-key", token_pem, "--dir", data, check=False)
    assert bad.returncode == 1 and "signature does not verify (forged)" in bad.stderr, bad.stderr
    assert f"sequence {issued['seq']}:" in bad.stderr, bad.stderr
    # Nor does esm sign on for the swapped public key.
    again = run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/w", "--out", tmp_path / "o2", "--dir", data,
                env=env, check=False)
    assert again.returncode != 0 and "is not the public half of checkpoint key" in again.stderr, again.stderr
    assert not (tmp_path / "o2").exists()


def test_with_the_checkpoint_key_in_a_file_root_can_resign_a_rewritten_log(tmp_path, esm_bin):
    """The limit the token removes: whoever can read audit/checkpoint.key re-signs a rewritten
    log that then verifies even under a copy of the public key kept elsewhere. (This also
    shows the forger above recomputes the log correctly: only the key gives it away.)"""
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/w", "--out", tmp_path / "o", "--dir", data)
    offbox = tmp_path / "offbox.pub"
    offbox.write_text(run("audit", "key", "--dir", data).stdout)
    stolen = audit_forger.stolen_file_key(data / "audit" / "checkpoint.key")
    audit_forger.rewrite(data / "audit.db", 2, "subject", f"spiffe://{TD}/evil", stolen)
    ok = run("audit", "verify", "--public-key", offbox, "--dir", data)
    assert ok.stdout.startswith("ok: events 1..2 verify")
    assert audit_events(data, {}, "svid.issued")[0]["subject"] == f"spiffe://{TD}/evil"


def test_audit_key_flags_are_checked_and_a_log_keeps_the_key_it_was_made_with(tmp_path, hsm):
    env = {**hsm, "ESM_PKCS11_PIN": PIN}
    data = tmp_path / "d"
    for args, want in [
        (["--audit-key-backend", "pkcs11"], "needs --pkcs11-module PATH and --pkcs11-token LABEL"),
        (["--pkcs11-module", MODULE, "--pkcs11-token", "esm-ca"],
         "need pkcs11 as --key-backend or --audit-key-backend"),
        (["--audit-key-backend", "hsm"], "invalid value 'hsm'"),
    ]:
        p = run("init", "--trust-domain", TD, "--dir", data, *args, env=env, check=False)
        assert p.returncode == 2 and want in p.stderr, p.stderr
        assert not data.exists()
    # CA keys in the token, the audit key in a file: the file key signs from then on, and
    # switching the log's key to the token later is refused (its checkpoints would no longer
    # verify under one key); no audit key is made in the token.
    run(*init_args(data), env=env)
    assert (data / "audit" / "checkpoint.key").exists()
    p = run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/w", "--out", tmp_path / "o", "--dir", data,
            env={**env, "ESM_AUDIT_KEY_BACKEND": "pkcs11"}, check=False)
    assert p.returncode == 2 and "cannot move to pkcs11" in p.stderr, p.stderr
    assert not [label for label in private_key_access(hsm) if "audit" in label]
    assert run("audit", "verify", "--dir", data).stdout.startswith("ok: events 1..1")
