"""ext_authz features through a real Envoy: io.jwt.* with a configured JWKS (the JWT
example), the rate-tier example, the Unix socket listener, a dry-run policy set picked per
route, and a signed OPA bundle that is hot-reloaded and refused when tampered with."""

import base64
import hashlib
import io
import json
import shutil
import tarfile
import time
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import ROOT, run
from envoy_harness import bootstrap, free_port, request, route

TD = "example.org"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Es256:
    """An ES256 signer with its JWKS and PEM public key."""

    def __init__(self, kid):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = kid

    def jwks(self):
        n = self.key.public_key().public_numbers()
        return json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256",
                                     "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}]})

    def pem(self):
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, payload):
        head = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": self.kid}).encode())
        body = b64(json.dumps(payload).encode())
        der = self.key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{head}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def init(tmp_path, example=None):
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    if example:
        shutil.rmtree(data / "policies")
        shutil.copytree(ROOT / "policies" / "examples" / example, data / "policies")
    return data


def test_jwt_example_verifies_tokens_against_the_configured_jwks(tmp_path, stack):
    esm, envoy, up = stack
    data = init(tmp_path, "jwt")
    issuer = Es256("k1")
    (data / "jwks.json").write_text(issuer.jwks())
    _, authz, _ = esm(data, {"ESM_AUTHZ_JWKS": "jwks.json"})
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port))
    claims = {"iss": "https://login.example.org", "aud": "orders-api", "exp": int(time.time()) + 300,
              "sub": "carol", "tid": "plant-7", "roles": ["reader"]}

    def get(token, tenant="plant-7", method="GET"):
        return request(port, method, "/orders", {"authorization": f"Bearer {token}", "x-tenant": tenant})

    status, _, body = get(issuer.sign(claims))
    assert status == 200, body
    assert json.loads(body)["x-jwt-sub"] == "carol"
    assert get(issuer.sign(claims), method="POST")[0] == 403
    assert get(issuer.sign(claims), tenant="plant-9")[0] == 403
    status, headers, _ = get(Es256("k1").sign(claims))             # another key, same kid
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert get(issuer.sign({**claims, "exp": int(time.time()) - 5}))[0] == 401
    assert get(issuer.sign({**claims, "aud": "billing"}))[0] == 401
    assert get("garbage")[0] == 401


def test_rate_tier_example_over_the_unix_socket_listener(tmp_path, stack):
    esm, envoy, up = stack
    data = init(tmp_path, "rate_tiers")
    sock = data / "authz.sock"
    # Envoy reaches esm only over the Unix socket. The caller's identity comes from XFCC
    # (a front proxy terminated mTLS), which esm reads with [authz] xfcc.
    esm(data, {"ESM_AUTHZ_XFCC": "true"}, unix="authz.sock")
    assert oct(sock.stat().st_mode & 0o777) == "0o660"
    port = free_port()
    envoy(bootstrap(free_port(), None, up, http_port=port, authz_pipe=sock, forward_xfcc=True))

    def as_caller(spiffe_id):
        return request(port, "GET", "/", {"x-forwarded-client-cert": f"By=spiffe://{TD}/edge;URI={spiffe_id}"})

    status, _, body = as_caller(f"spiffe://{TD}/ns/prod/sa/hmi-line3")
    assert status == 200, body
    assert json.loads(body)["x-esm-rate-tier"] == "interactive"
    status, _, body = as_caller(f"spiffe://{TD}/ns/prod/sa/batch-export")
    assert json.loads(body)["x-esm-rate-tier"] == "bulk"
    status, _, body = as_caller(f"spiffe://{TD}/ns/prod/sa/scraper")
    assert (status, body) == (429, "caller is blocked")
    status, _, body = request(port, "GET", "/")
    assert (status, body) == (403, "caller has no rate tier")
    # Each decision's record names the caller the policy decided on, and keeps who forwarded
    # the header (here the client Envoy saw, at its address); without a header, the peer.
    def decisions():
        out = run("audit", "export", "--format", "jsonl", "--kind", "authz.decision",
                  "--dir", data).stdout
        return [json.loads(line) for line in out.splitlines()]

    deadline = time.time() + 10
    while len(decisions()) < 4 and time.time() < deadline:
        time.sleep(0.2)
    assert [(r["actor"], r["details"].get("forwarded_by")) for r in decisions()] == [
        (f"spiffe://{TD}/ns/prod/sa/hmi-line3", "127.0.0.1"),
        (f"spiffe://{TD}/ns/prod/sa/batch-export", "127.0.0.1"),
        (f"spiffe://{TD}/ns/prod/sa/scraper", "127.0.0.1"),
        ("127.0.0.1", None),
    ]


def test_dry_run_policy_set_chosen_per_route(tmp_path, stack):
    esm, envoy, up = stack
    data = init(tmp_path)
    canary = data / "policies-canary"
    canary.mkdir()
    (canary / "deny.rego").write_text("package envoy.authz\nimport rego.v1\ndefault allow := false\n")
    with open(data / "esm.toml", "a") as f:
        f.write('\n[authz.sets.canary]\npolicy_dir = "policies-canary"\ndry_run = true\n'
                '\n[authz.sets.enforced]\npolicy_dir = "policies-canary"\n')
    _, authz, admin = esm(data)
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port,
                    routes=[route("/canary", "canary"), route("/enforced", "enforced"),
                            route("/missing", "no-such-set"), route("/")]))
    assert request(port, "GET", "/canary/x")[0] == 200        # would deny, dry-run allows
    assert request(port, "GET", "/enforced/x")[0] == 403      # same policy, enforcing
    assert request(port, "GET", "/missing/x")[0] == 403       # unknown set: fail closed
    assert request(port, "GET", "/")[0] == 403                # default set, no identity
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'esm_authz_dry_run_would_deny_total 1' in metrics
    time.sleep(1.5)
    out = run("audit", "tail", "-n", "100", "--dir", data).stdout
    decisions = [json.loads(l) for l in out.splitlines() if '"authz.decision"' in l]
    canary_events = [d for d in decisions if d["details"]["policy.set"] == "canary"]
    assert len(canary_events) == 1
    assert canary_events[0]["details"]["policy_allowed"] is False
    assert canary_events[0]["outcome"] == "allow"


def bundle(path, files, signer=None, manifest=None):
    """Writes an OPA bundle; with `signer`, a .signatures.json over every file."""
    entries = dict(files)
    if manifest is not None:
        entries[".manifest"] = json.dumps(manifest)
    if signer:
        listed = []
        for name, text in entries.items():
            payload = text.encode()
            if name.endswith(".json") or name == ".manifest":
                payload = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")).encode()
            listed.append({"name": name, "algorithm": "SHA-256", "hash": hashlib.sha256(payload).hexdigest()})
        entries[".signatures.json"] = json.dumps({"signatures": [signer.sign({"files": listed})]})
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, text in entries.items():
            raw = text.encode()
            info = tarfile.TarInfo("/" + name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    tmp.replace(path)


POLICY = "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if input.parsed_path[0] in data.open\n"


def test_signed_bundle_reloads_and_a_tampered_one_is_refused(tmp_path, stack):
    esm, envoy, up = stack
    data = init(tmp_path)
    signer = Es256("bundle")
    (data / "bundle.pub.pem").write_text(signer.pem())
    b = data / "bundle.tar.gz"
    bundle(b, {"authz/policy.rego": POLICY, "data.json": json.dumps({"open": ["a"]})}, signer,
           {"revision": "1"})
    _, authz, _ = esm(data, {"ESM_AUTHZ_POLICY_DIR": "bundle.tar.gz", "ESM_AUTHZ_BUNDLE_KEY": "bundle.pub.pem"})
    port = free_port()
    envoy(bootstrap(free_port(), authz, up, http_port=port))
    assert request(port, "GET", "/a")[0] == 200
    assert request(port, "GET", "/b")[0] == 403
    # Signed by someone else: refused, the old policy keeps deciding.
    bundle(b, {"authz/policy.rego": POLICY, "data.json": json.dumps({"open": ["a", "b"]})}, Es256("bundle"))
    time.sleep(2.5)
    assert request(port, "GET", "/b")[0] == 403
    # Unsigned: refused.
    bundle(b, {"authz/policy.rego": POLICY, "data.json": json.dumps({"open": ["b"]})})
    time.sleep(2.5)
    assert request(port, "GET", "/a")[0] == 200
    # Properly signed: swapped in.
    bundle(b, {"authz/policy.rego": POLICY, "data.json": json.dumps({"open": ["b"]})}, signer,
           {"revision": "2"})
    time.sleep(2.5)
    assert request(port, "GET", "/b")[0] == 200
    assert request(port, "GET", "/a")[0] == 403
    out = run("audit", "tail", "-n", "1000", "--dir", data).stdout
    changes = [json.loads(l) for l in out.splitlines() if '"policy.changed"' in l]
    assert [c["action"] for c in changes] == ["refuse", "refuse", "reload"]
    assert "does not verify" in changes[0]["reason"]
    assert "not signed" in changes[1]["reason"]
