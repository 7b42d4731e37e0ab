"""Every SVID esm issues passes the real checkers: py-spiffe's X509-SVID rules, pkilint's
RFC 5280 linter and `openssl verify`, for each CA key algorithm and for CSR issuance."""

import json
import re
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import X509Svid

from conftest import make_ca, run

ALGORITHMS = ["ec-p256", "ec-p384", "rsa-3072"]


def split_pem(path):
    text = path.read_text()
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", text, re.S)


def pkilint_findings(pem_path):
    """ERROR/FATAL findings of lint_pkix_cert, minus the known spiffe:// URI false positive."""
    p = subprocess.run(
        ["lint_pkix_cert", "lint", "-s", "ERROR", "-f", "JSON", str(pem_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode in (0, 1, 2), p.stderr
    findings = []
    out = json.loads(p.stdout) if p.stdout.strip() else {"results": []}
    for result in out.get("results", []):
        for f in result.get("finding_descriptions", []):
            if f["code"] == "pkix.invalid_uri_syntax" and "spiffe://" in (f.get("message") or ""):
                continue
            findings.append((result.get("node_path"), f["code"], f.get("message")))
    return findings


def openssl_verify(bundle, intermediate, leaf, purpose):
    return subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile", str(bundle),
         "-untrusted", str(intermediate), str(leaf)],
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_svid_passes_py_spiffe_pkilint_and_openssl(tmp_path, esm_bin, algorithm):
    data = make_ca(tmp_path, algorithm)
    out = tmp_path / "out"
    run("cert", "issue", "--spiffe-id", "spiffe://example.org/ns/prod/web", "--out", out, "--dir", data)

    svid = X509Svid.load(str(out / "svid.pem"), str(out / "svid.key"), Encoding.PEM)
    assert str(svid.spiffe_id) == "spiffe://example.org/ns/prod/web"
    assert len(svid.cert_chain) == 2

    leaf_pem, inter_pem = split_pem(out / "svid.pem")
    roots = split_pem(out / "bundle.pem")
    assert len(roots) == 1
    for name, pem in [("leaf", leaf_pem), ("intermediate", inter_pem), ("root", roots[0])]:
        path = tmp_path / f"{name}.pem"
        path.write_text(pem)
        assert pkilint_findings(path) == [], f"{algorithm} {name}"

    (tmp_path / "leaf.pem").write_text(leaf_pem)
    (tmp_path / "inter.pem").write_text(inter_pem)
    for purpose in ["sslserver", "sslclient"]:
        v = openssl_verify(out / "bundle.pem", tmp_path / "inter.pem", tmp_path / "leaf.pem", purpose)
        assert v.returncode == 0, v.stdout + v.stderr

    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    assert leaf.serial_number.bit_length() >= 120
    ttl = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 3600 <= ttl.total_seconds() <= 3600 + 60


def test_svid_from_openssl_csr_passes_py_spiffe(tmp_path, ca):
    key = tmp_path / "w.key"
    csr = tmp_path / "w.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-subj", "/O=w", "-addext", "subjectAltName=URI:spiffe://example.org/w",
         "-out", str(csr)],
        check=True, capture_output=True, timeout=30,
    )
    out = tmp_path / "out"
    run("cert", "issue", "--spiffe-id", "spiffe://example.org/w", "--csr", csr, "--out", out, "--dir", ca)
    assert not (out / "svid.key").exists(), "esm must not write a key it did not make"
    svid = X509Svid.load(str(out / "svid.pem"), str(key), Encoding.PEM)
    assert str(svid.spiffe_id) == "spiffe://example.org/w"


def test_svids_from_before_a_rotation_still_verify_against_the_bundle(tmp_path, ca):
    before = tmp_path / "before"
    run("cert", "issue", "--spiffe-id", "spiffe://example.org/a", "--out", before, "--dir", ca)
    run("ca", "rotate", "prepare", "--root", "--dir", ca)
    run("ca", "rotate", "activate", "--root", "--dir", ca)
    after = tmp_path / "after"
    run("cert", "issue", "--spiffe-id", "spiffe://example.org/a", "--out", after, "--dir", ca)
    assert len(split_pem(after / "bundle.pem")) == 2
    for d in (before, after):
        leaf, inter = split_pem(d / "svid.pem")
        (d / "leaf.pem").write_text(leaf)
        (d / "inter.pem").write_text(inter)
        v = openssl_verify(after / "bundle.pem", d / "inter.pem", d / "leaf.pem", "sslclient")
        assert v.returncode == 0, v.stdout + v.stderr
        X509Svid.load(str(d / "svid.pem"), str(d / "svid.key"), Encoding.PEM)


def test_spiffe_bundle_format(tmp_path, ca):
    out = run("bundle", "show", "--format", "spiffe", "--dir", ca).stdout
    doc = json.loads(out)
    assert doc["spiffe_sequence"] >= 1
    assert doc["spiffe_refresh_hint"] > 0
    (key,) = doc["keys"]
    assert key["use"] == "x509-svid" and key["kty"] == "EC" and key["crv"] == "P-256"
    pem = run("bundle", "show", "--dir", ca).stdout
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
