"""Bad input to the CA commands: a one-line reason, exit 2 (usage) or 1 (refused), and no
file written."""

import os
import subprocess

import pytest

from conftest import run

INVALID_IDS = [
    "",
    "example.org/web",
    "http://example.org/web",
    "spiffe://",
    "spiffe://Example.org/web",
    "spiffe://example.org:8443/web",
    "spiffe://user@example.org/web",
    "spiffe://example.org/web/",
    "spiffe://example.org//web",
    "spiffe://example.org/./web",
    "spiffe://example.org/../web",
    "spiffe://example.org/web?x=1",
    "spiffe://example.org/web#f",
    "spiffe://example.org/w%20b",
    "spiffe://example.org/" + "a" * 2100,
    "spiffe://other.org/web",
    "spiffe://example.org",
]


def assert_refused(p, out_dir, code):
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = [l for l in p.stderr.splitlines() if l.startswith("esm: error:")]
    assert len(lines) == 1, p.stderr
    assert not out_dir.exists(), "nothing may be written on refusal"


@pytest.mark.parametrize("spiffe_id", INVALID_IDS)
def test_invalid_spiffe_id_is_refused_and_writes_nothing(tmp_path, ca, spiffe_id):
    out = tmp_path / "out"
    p = run("cert", "issue", "--spiffe-id", spiffe_id, "--out", out, "--dir", ca, check=False)
    assert_refused(p, out, 2)


def make_csr(tmp_path, san="URI:spiffe://example.org/w", newkey=("ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
             extra=()):
    csr = tmp_path / "w.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", *newkey, "-nodes", "-keyout", os.devnull, "-subj", "/O=w",
         "-addext", f"subjectAltName={san}", *extra, "-outform", "DER", "-out", str(csr)],
        check=True, capture_output=True, timeout=60,
    )
    return csr


@pytest.mark.parametrize(
    "name,make",
    [
        ("garbage", lambda t: t.joinpath("x.csr").write_bytes(b"\x30\x82garbage") and t / "x.csr"),
        ("empty", lambda t: t.joinpath("x.csr").write_bytes(b"") or t / "x.csr"),
        ("oversized", lambda t: t.joinpath("x.csr").write_bytes(b"\x30" * (2 << 20)) and t / "x.csr"),
        ("two-uris", lambda t: make_csr(t, "URI:spiffe://example.org/w,URI:spiffe://example.org/x")),
        ("other-id", lambda t: make_csr(t, "URI:spiffe://example.org/x")),
        ("weak-rsa", lambda t: make_csr(t, newkey=("rsa:1024",))),
        ("bad-curve", lambda t: make_csr(t, newkey=("ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"))),
        ("ca-rights", lambda t: make_csr(t, extra=("-addext", "basicConstraints=critical,CA:TRUE"))),
        ("cert-sign", lambda t: make_csr(t, extra=("-addext", "keyUsage=keyCertSign"))),
    ],
)
def test_bad_csr_is_refused_and_writes_nothing(tmp_path, ca, name, make):
    csr = make(tmp_path)
    out = tmp_path / "out"
    p = run("cert", "issue", "--spiffe-id", "spiffe://example.org/w", "--csr", csr, "--out", out,
            "--dir", ca, check=False)
    assert_refused(p, out, 1)


def test_csr_with_a_broken_signature_is_refused(tmp_path, ca):
    csr = make_csr(tmp_path)
    der = bytearray(csr.read_bytes())
    der[-5] ^= 0xFF
    csr.write_bytes(bytes(der))
    out = tmp_path / "out"
    p = run("cert", "issue", "--spiffe-id", "spiffe://example.org/w", "--csr", csr, "--out", out,
            "--dir", ca, check=False)
    assert_refused(p, out, 1)
    assert "signature" in p.stderr


def test_unknown_flags_and_missing_config_exit_2(tmp_path, ca):
    assert run("cert", "issue", "--bogus", check=False).returncode == 2
    assert run("frobnicate", check=False).returncode == 2
    p = run("bundle", "show", "--dir", tmp_path / "nowhere", check=False)
    assert p.returncode == 2 and "esm init" in p.stderr
    p = run("cert", "issue", "--spiffe-id", "spiffe://example.org/w", "--ttl", "soon", "--out",
            tmp_path / "o", "--dir", ca, check=False)
    assert_refused(p, tmp_path / "o", 2)


def test_init_refuses_bad_trust_domain_and_existing_dir(tmp_path, ca):
    d = tmp_path / "bad"
    p = run("init", "--trust-domain", "Example.ORG", "--dir", d, check=False)
    assert p.returncode == 2 and not d.exists()
    assert run("init", "--trust-domain", "example.org", "--dir", ca, check=False).returncode == 2


def test_encrypted_keys_need_the_passphrase(tmp_path, esm_bin):
    d = tmp_path / "enc"
    env = {"ESM_CA_KEY_PASSPHRASE": "correct horse battery staple"}
    run("init", "--trust-domain", "example.org", "--dir", d, env=env)
    for key in (d / "ca" / "keys").iterdir():
        assert "ENCRYPTED PRIVATE KEY" in key.read_text()
        assert oct(key.stat().st_mode & 0o777) == "0o600"
    run("cert", "issue", "--spiffe-id", "spiffe://example.org/w", "--out", tmp_path / "ok", "--dir", d, env=env)
    p = run("cert", "issue", "--spiffe-id", "spiffe://example.org/w", "--out", tmp_path / "no", "--dir", d,
            check=False)
    assert p.returncode == 2 and "passphrase" in p.stderr
    p = run("cert", "issue", "--spiffe-id", "spiffe://example.org/w", "--out", tmp_path / "no", "--dir", d,
            env={"ESM_CA_KEY_PASSPHRASE": "wrong"}, check=False)
    assert p.returncode == 1 and "wrong passphrase" in p.stderr
