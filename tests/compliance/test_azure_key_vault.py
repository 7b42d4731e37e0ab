"""The azure-key-vault key backend against a local Key Vault stand-in (keyvault_standin.py).

The stand-in is first held to the real protocol by the official Azure SDK; then esm's backend
makes, finds and signs with CA keys through it, and survives token expiry, throttling,
refusals and the vault going away. The audit checkpoint key in the vault is P-256 and signs
with ES256; a log rewritten and re-signed on the host fails verification."""

import hashlib
import json
import os
import re
import statistics
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import WorkloadApiClient, X509Svid

import audit_forger
from conftest import run
from keyvault_standin import CLIENT_ID, CLIENT_SECRET, TENANT, StandIn, unb64u
from test_pkcs11 import audit_events, events_through_serve
from test_svid_checkers import openssl_verify, pkilint_findings, split_pem

TD = "example.org"


@pytest.fixture
def vault(tmp_path):
    s = StandIn(tmp_path)
    yield s
    s.stop()


def esm_env(vault, **extra):
    env = {
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_CLIENT_SECRET": CLIENT_SECRET,
        "AZURE_AUTHORITY_HOST": vault.url,
        "ESM_CA_AZURE_KEY_VAULT_CA_FILE": str(vault.ca_pem),
        # Never the real 169.254.169.254, whatever the auth mode ends up being.
        "ESM_CA_AZURE_KEY_VAULT_IMDS_ENDPOINT": vault.imds_url,
        # The stand-in's host is 127.0.0.1, not under vault.azure.net.
        "ESM_CA_AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "false",
    }
    env.update(extra)
    return env


def init(tmp_path, vault, algorithm="ec-p256", env=None, check=True):
    data = tmp_path / "esm-data"
    p = run("init", "--trust-domain", TD, "--dir", data, "--key-algorithm", algorithm,
            "--key-backend", "azure-key-vault", "--azure-vault-url", vault.url,
            env=env or esm_env(vault), check=check)
    return data, p


def check_svid(tmp_path, out):
    """The same checks as the file backend's SVIDs: py-spiffe, pkilint, openssl."""
    X509Svid.load(str(out / "svid.pem"), str(out / "svid.key"), Encoding.PEM)
    leaf, inter = split_pem(out / "svid.pem")
    roots = split_pem(out / "bundle.pem")
    for name, pem in [("leaf", leaf), ("intermediate", inter)] + [(f"root{i}", r) for i, r in enumerate(roots)]:
        path = tmp_path / f"{name}.pem"
        path.write_text(pem)
        assert pkilint_findings(path) == [], name
    for purpose in ["sslserver", "sslclient"]:
        v = openssl_verify(out / "bundle.pem", tmp_path / "intermediate.pem", tmp_path / "leaf.pem", purpose)
        assert v.returncode == 0, v.stdout + v.stderr


def test_official_sdk_creates_signs_and_verifies_against_the_standin(vault):
    """Holds the stand-in to the real protocol: azure-identity fetches the token, and
    azure-keyvault-keys goes through the 401 challenge, creates a key, signs and verifies."""
    from azure.identity import ClientSecretCredential
    from azure.keyvault.keys import KeyClient
    from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    ca = str(vault.ca_pem)
    cred = ClientSecretCredential(TENANT, CLIENT_ID, CLIENT_SECRET, authority=vault.url,
                                  disable_instance_discovery=True, connection_verify=ca)
    client = KeyClient(vault.url, cred, connection_verify=ca, verify_challenge_resource=False)
    key = client.create_ec_key("sdk-key", curve="P-256")
    assert key.key.crv == "P-256"
    # The SDK's own GET (with the trailing slash it sends) finds the same version.
    assert client.get_key("sdk-key").id == key.id
    crypto = CryptographyClient(key.id, cred, connection_verify=ca, verify_challenge_resource=False)
    digest = hashlib.sha256(b"hello from the SDK").digest()
    signed = crypto.sign(SignatureAlgorithm.es256, digest)
    assert len(signed.signature) == 64
    assert crypto.verify(SignatureAlgorithm.es256, digest, signed.signature).is_valid
    assert not crypto.verify(SignatureAlgorithm.es256, hashlib.sha256(b"x").digest(), signed.signature).is_valid
    # And independently of the stand-in: the raw r||s verifies under the JWK's public key.
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"),
                                        ec.SECP256R1()).public_key()
    r, s = signed.signature[:32], signed.signature[32:]
    pub.verify(utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big")),
               digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    # The SDK's first vault request carried no token and met the challenge.
    first = next(e for e in vault.log if e[1].startswith("/keys/"))
    assert first[3] is False and first[4] == 401
    sdk_versions = {e[2] for e in vault.log if e[1].startswith("/keys/")}
    assert sdk_versions and sdk_versions <= {"7.5", "7.6", "2025-07-01"}, sdk_versions


@pytest.mark.parametrize("algorithm", ["ec-p256", "ec-p384", "rsa-3072"])
def test_init_issue_and_rotate_sign_through_the_vault(tmp_path, esm_bin, vault, algorithm):
    data, _ = init(tmp_path, vault, algorithm)
    env = esm_env(vault)
    cfg = (data / "esm.toml").read_text()
    assert 'key_backend = "azure-key-vault"' in cfg and f'vault_url = "{vault.url}"' in cfg
    # No key material on disk: the CA keys are in the vault.
    assert not (data / "ca" / "keys").exists() or not any((data / "ca" / "keys").iterdir())
    assert len(vault.keys) == 2
    out = tmp_path / "out"
    signs = vault.count("POST", "/sign")
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/ns/prod/web", "--out", out, "--dir", data, env=env)
    assert vault.count("POST", "/sign") == signs + 1
    check_svid(tmp_path, out)
    run("ca", "rotate", "prepare", "--root", "--dir", data, env=env)
    run("ca", "rotate", "activate", "--root", "--dir", data, env=env)
    assert len(vault.keys) == 4
    after = tmp_path / "after"
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/ns/prod/web", "--out", after, "--dir", data, env=env)
    assert len(split_pem(after / "bundle.pem")) == 2
    check_svid(tmp_path, after)
    # The SVID's issuer key is the vault key's public key.
    leaf, inter = split_pem(after / "svid.pem")
    inter_cert = x509.load_pem_x509_certificate(inter.encode())
    x509.load_pem_x509_certificate(leaf.encode()).verify_directly_issued_by(inter_cert)
    # esm sent a current api-version and no secret in any log line.
    assert {e[2] for e in vault.log if e[1].startswith("/keys/")} == {"7.5"}


def test_init_refuses_http_vault_and_writes_nothing(tmp_path, esm_bin, vault):
    data = tmp_path / "esm-data"
    p = run("init", "--trust-domain", TD, "--dir", data, "--key-backend", "azure-key-vault",
            "--azure-vault-url", vault.url.replace("https", "http"), env=esm_env(vault), check=False)
    assert p.returncode == 2 and "https://" in p.stderr
    assert not data.exists()
    assert vault.log == []


def test_forbidden_identity_fails_init_with_one_line_and_writes_nothing(tmp_path, esm_bin, vault):
    vault.forbidden = True
    data, p = init(tmp_path, vault, check=False)
    assert p.returncode == 1, p.stderr
    lines = [line for line in p.stderr.splitlines() if "403" in line]
    assert len(lines) == 1, p.stderr
    assert vault.url in lines[0] and "Forbidden" in lines[0] and "esm-access-check" in lines[0]
    assert not data.exists()
    # The same holds for an existing (empty) data dir: nothing is written into it.
    data.mkdir()
    _, p = init(tmp_path, vault, check=False)
    assert p.returncode == 1 and list(data.iterdir()) == []


def test_unreachable_vault_fails_init_and_writes_nothing(tmp_path, esm_bin, vault):
    vault.stop()
    t0 = time.monotonic()
    data, p = init(tmp_path, vault, check=False)
    assert p.returncode == 1 and "cannot reach Key Vault" in p.stderr, p.stderr
    assert time.monotonic() - t0 < 30
    assert not data.exists()


def test_wrong_client_secret_is_a_clear_error(tmp_path, esm_bin, vault):
    data, p = init(tmp_path, vault, env=esm_env(vault, AZURE_CLIENT_SECRET="wrong"), check=False)
    assert p.returncode == 1 and "invalid_client" in p.stderr, p.stderr
    assert "wrong" not in p.stderr and CLIENT_SECRET not in p.stderr
    assert not data.exists()


def fetch(data):
    with WorkloadApiClient(socket_path=f"unix://{data / 'agent.sock'}", default_timeout=40) as c:
        return c.fetch_x509_svid()


def ids(data):
    with WorkloadApiClient(socket_path=f"unix://{data / 'agent.sock'}", default_timeout=40) as c:
        return {str(s.spiffe_id) for s in c.fetch_x509_svids()}


def grant(data, env, name):
    """A new identity for this uid: esm holds one SVID per identity, so only a new one makes
    it sign again."""
    run("entry", "create", "--spiffe-id", f"spiffe://{TD}/{name}", "--selector", f"unix:uid:{os.getuid()}",
        "--dir", data, env=env)
    return f"spiffe://{TD}/{name}"


def test_serve_signs_through_the_vault_across_expiry_throttling_and_an_outage(tmp_path, stack, vault):
    """Token expiry (short-lived tokens are refreshed), 429 with Retry-After (esm waits and
    succeeds), a revoked token (the 401 is answered again), and the vault going away (a clear
    error and the SVIDs already issued still served, then recovery when it is back). Each
    step grants a new identity, since esm signs once per identity, not per fetch."""
    esm, _, _ = stack
    env = esm_env(vault)
    data, _ = init(tmp_path, vault)
    vault.token_lifetime = 2
    esm(data, env)
    w = grant(data, env, "w")
    signs = vault.count("POST", "/sign")
    assert str(fetch(data).spiffe_id) == w
    assert vault.count("POST", "/sign") > signs
    # A second fetch of the same identity is served without signing again.
    signs = vault.count("POST", "/sign")
    fetch(data)
    assert vault.count("POST", "/sign") == signs

    # Expiry: the token esm holds is past its refresh time; it fetches a new one, no 401.
    tokens = len(vault.tokens)
    time.sleep(2.5)
    signs = vault.count("POST", "/sign")
    assert grant(data, env, "after-expiry") in ids(data)
    assert vault.count("POST", "/sign") > signs
    assert len(vault.tokens) > tokens
    assert not [e for e in vault.log if e[3] and e[4] == 401]

    # Revoked token: the vault answers 401 to it; esm meets the challenge again and succeeds.
    vault.token_lifetime = 3600
    time.sleep(1.1)
    grant(data, env, "fresh-token")
    ids(data)
    vault.tokens.clear()
    assert grant(data, env, "revoked-token") in ids(data)
    assert [e for e in vault.log if e[3] and e[4] == 401]

    # Throttling: two 429s with Retry-After: 1; esm waits them out.
    vault.throttle, vault.retry_after = 2, 1
    t0 = time.monotonic()
    assert grant(data, env, "throttled") in ids(data)
    assert time.monotonic() - t0 >= 2
    assert vault.throttle == 0 and vault.count("POST", "/sign") and [e for e in vault.log if e[4] == 429]

    # Outage: a new identity cannot be signed, with a clear error in esm's log, while the
    # SVIDs already issued are still served...
    vault.stop()
    down = grant(data, env, "during-outage")
    deadline = time.monotonic() + 30
    log = ""
    while "cannot reach Key Vault " + vault.url not in log and time.monotonic() < deadline:
        try:
            ids(data)
        except Exception:
            pass
        log = "".join(p.read_text() for p in tmp_path.glob("esm-*.log"))
    assert "cannot reach Key Vault " + vault.url in log, log[-2000:]
    # ...and it is signed once the vault is back, by the same esm process.
    vault.start()
    deadline = time.monotonic() + 45
    got = set()
    while down not in got and time.monotonic() < deadline:
        try:
            got = ids(data)
        except Exception:
            time.sleep(0.5)
    assert down in got and w in got
    log = "".join(p.read_text() for p in tmp_path.glob("esm-*.log"))
    for secret in (CLIENT_SECRET, *vault.tokens):
        assert secret not in log


def test_managed_identity_through_imds(tmp_path, esm_bin, vault):
    env = esm_env(vault, ESM_CA_AZURE_KEY_VAULT_AUTH="managed-identity")
    del env["AZURE_CLIENT_SECRET"]
    data, _ = init(tmp_path, vault, env=env)
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/mi", "--out", tmp_path / "o", "--dir", data, env=env)
    assert vault.count("GET", "/metadata/identity/oauth2/token") >= 2
    assert not vault.count("POST", "/oauth2/v2.0/token")


def test_refuses_a_challenge_for_another_service(tmp_path, esm_bin, vault):
    """A vault URL that points at someone else's server, which asks for a token of another
    Azure service: with the resource check on (the default), esm asks for no token at all."""
    env = esm_env(vault)
    del env["ESM_CA_AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE"]
    data, p = init(tmp_path, vault, env=env, check=False)
    assert p.returncode == 1 and "not the vault's domain" in p.stderr, p.stderr
    assert not vault.tokens and not data.exists()


def test_signing_latency_as_seen_by_esm(tmp_path, stack, vault):
    """50 SVIDs from `esm serve`, one per identity, each signed through the vault; prints the
    stand-in's own signing time, the sign as esm sees it, and the fetch that issued them all
    as a workload sees it (median, p99)."""
    esm, _, _ = stack
    env = esm_env(vault)
    data, _ = init(tmp_path, vault)
    esm(data, {**env, "ESM_LOG": "info,esm_ca::key_backend::azure_key_vault=debug"})
    grant(data, env, "bench-0")
    fetch(data)
    for i in range(1, 51):
        grant(data, env, f"bench-{i}")
    vault.sign_times.clear()
    signs = vault.count("POST", "/sign")
    t0 = time.perf_counter()
    assert len(ids(data)) == 51
    seen = [time.perf_counter() - t0]
    assert vault.count("POST", "/sign") - signs == 50

    def q(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000

    server = vault.sign_times
    print(f"\nstand-in sign: median {statistics.median(server) * 1000:.2f} ms, p99 {q(server, 0.99):.2f} ms")
    log = "".join(p.read_text() for p in tmp_path.glob("esm-*.log"))
    esm_side = [int(m) / 1e6 for m in re.findall(r"sign\.us\W+(\d+)", log)][-50:]
    assert len(esm_side) == 50
    print(f"sign as esm sees it: median {statistics.median(esm_side) * 1000:.2f} ms, p99 {q(esm_side, 0.99):.2f} ms")
    print(f"one fetch issuing 50 SVIDs via esm+vault: {seen[0] * 1000:.0f} ms")


def vault_public_pem(vault, name, version, out):
    """The key's public half as the vault gives it to the official SDK, as a PEM file."""
    from azure.identity import ClientSecretCredential
    from azure.keyvault.keys import KeyClient
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import PublicFormat

    ca = str(vault.ca_pem)
    cred = ClientSecretCredential(TENANT, CLIENT_ID, CLIENT_SECRET, authority=vault.url,
                                  disable_instance_discovery=True, connection_verify=ca)
    key = KeyClient(vault.url, cred, connection_verify=ca, verify_challenge_resource=False).get_key(name, version)
    assert key.key.crv == "P-256"
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"),
                                        ec.SECP256R1()).public_key()
    out.write_bytes(pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return out


def test_audit_checkpoint_key_in_the_vault_signs_es256_and_a_resigned_rewrite_fails(tmp_path, stack, vault):
    """CA keys in files, the checkpoint key alone in the vault: Key Vault has no Ed25519, so
    the key is P-256 and each checkpoint is one ES256 sign call; the data dir holds only
    its public half, and a rewritten log re-signed on the host does not verify."""
    esm, _, _ = stack
    env = esm_env(vault)
    data = tmp_path / "esm-data"
    run("init", "--trust-domain", TD, "--dir", data, "--audit-key-backend", "azure-key-vault",
        "--azure-vault-url", vault.url, env=env)
    ref = json.loads((data / "audit" / "checkpoint-key.json").read_text())
    assert ref["backend"] == "azure-key-vault" and ref["algorithm"] == "ecdsa-p256-sha256", ref
    assert ref["key_id"].startswith("p256:")
    name, version = ref["backend_key_id"].split("/")
    assert list(vault.keys) == [name] and name.startswith("esm-audit-checkpoint-")
    assert (data / "audit" / "checkpoint.pub").read_text().startswith("p256:")
    custody = audit_events(data, env, "ca.initialized")[0]["details"]["key_backend"]
    assert custody["root"]["backend"] == "file"
    assert custody["audit"]["backend"] == "azure-key-vault" and custody["audit"]["key_id"] == ref["key_id"]
    assert set(vault.signs) == {(name, "ES256")}  # init's checkpoint

    vault_pem = vault_public_pem(vault, name, version, tmp_path / "vault.pem")
    events_through_serve(esm, data, env, tmp_path / "o")
    # One ES256 call per checkpoint (init, the issuance, the server's last), no other key or alg.
    assert vault.signs == [(name, "ES256")] * 3, vault.signs
    issued = audit_events(data, env, "svid.issued")[-1]
    # Verification is offline: no vault, no credentials.
    for key_args in [(), ("--public-key", vault_pem)]:
        ok = run("audit", "verify", *key_args, "--dir", data)
        assert ok.stdout.startswith("ok:") and ref["key_id"] in ok.stdout, ok.stdout
    for f in (data / "audit").iterdir():
        assert b"PRIVATE KEY" not in f.read_bytes() and f.name != "checkpoint.key", f

    # Root rewrites the issuance and re-signs with its own key, under its own id and, to
    # confuse the verifier, under the vault key's P-256 id: neither verifies.
    attacker = Ed25519PrivateKey.generate()
    for key_id in [None, ref["key_id"]]:
        audit_forger.rewrite(data / "audit.db", issued["seq"], "subject", f"spiffe://{TD}/evil",
                             attacker, key_id=key_id)
        (data / "audit" / "checkpoint.pub").write_text(audit_forger.key_text(attacker)[0])
        bad = run("audit", "verify", "--public-key", vault_pem, "--dir", data, check=False)
        assert bad.returncode == 1 and "signature does not verify (forged)" in bad.stderr, bad.stderr
        assert f"sequence {issued['seq']}:" in bad.stderr, bad.stderr


def test_proofs_reports_and_retention_verify_under_a_p256_checkpoint_key(tmp_path, esm_bin, vault):
    """Every statement the audit key signs — checkpoints in proofs, the report's seal, the
    retention statement — verifies with the vault key's public half alone."""
    env = esm_env(vault)
    data = tmp_path / "esm-data"
    run("init", "--trust-domain", TD, "--dir", data, "--audit-key-backend", "azure-key-vault",
        "--azure-vault-url", vault.url, env=env)
    for i in range(3):
        run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/w{i}", "--out", tmp_path / f"o{i}", "--dir", data,
            env=env)
    ref = json.loads((data / "audit" / "checkpoint-key.json").read_text())
    vault_pem = vault_public_pem(vault, *ref["backend_key_id"].split("/"), tmp_path / "vault.pem")
    (tmp_path / "incl.json").write_text(run("audit", "prove", "2", "--dir", data).stdout)
    (tmp_path / "cons.json").write_text(run("audit", "consistency", "2", "--dir", data).stdout)
    for proof in ["incl.json", "cons.json"]:
        ok = run("audit", "verify-proof", tmp_path / proof, "--public-key", vault_pem, "--dir", data)
        assert ok.stdout.startswith("ok:"), ok.stdout
        assert json.loads((tmp_path / proof).read_text()).__str__().count(ref["key_id"]) >= 1
    today = time.strftime("%Y-%m-%d", time.gmtime())
    report = tmp_path / "report.json"
    run("report", "--framework", "soc2", "--from", today, "--to", today, "--format", "json", "--out", report,
        "--dir", data, env=env, check=False)
    assert run("report", "verify", report, "--public-key", vault_pem, "--dir", data).returncode == 0
    # Retention: the statement is signed in the vault too, and the shortened log verifies.
    signs = len(vault.signs)
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    run("audit", "retain", "--before", tomorrow, "--dir", data, env=env)
    assert len(vault.signs) > signs and {a for _, a in vault.signs} == {"ES256"}
    ok = run("audit", "verify", "--public-key", vault_pem, "--dir", data)
    assert "after retention signed in event" in ok.stdout, ok.stdout
