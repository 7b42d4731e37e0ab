"""A local stand-in for Azure Key Vault's keys REST API and Entra ID's token endpoints, with
real cryptography, so esm's azure-key-vault backend can be tested without Azure.

It is held to the documented protocol, not to esm's client: the official Azure SDK
(azure-keyvault-keys + azure-identity) runs against it in the same test run. It serves:

* HTTPS, with a CA made per run (``ca_pem``): the vault and the Entra ID endpoints
  (``/{tenant}/oauth2/v2.0/token``, ``/{tenant}/v2.0/.well-known/openid-configuration``);
* plain HTTP on a second port: an IMDS-style managed identity endpoint.

Requests to the vault without a valid token get the 401 challenge
``Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"``.
Faults are switched on by attributes: ``token_lifetime``, ``throttle`` (that many 429s with
``Retry-After``), ``forbidden`` (403 on key operations), ``stop()``/``start()`` (the server goes
away and comes back on the same port).
"""

import base64
import datetime
import http.server
import ipaddress
import json
import secrets
import socket
import ssl
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

TENANT = "0d1e2f3a-standin-tenant"
CLIENT_ID = "esm-test-client"
CLIENT_SECRET = "standin-secret-" + secrets.token_hex(8)
RESOURCE = "https://vault.azure.net"
API_VERSIONS = {"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01"}
HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def int_bytes(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return n.to_bytes(size, "big")


def make_tls(dirpath):
    """A CA and a server certificate for 127.0.0.1/localhost; returns (ca_pem, cert, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyvault stand-in CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = dirpath / "standin-ca.pem", dirpath / "standin.pem", dirpath / "standin.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def jwk(kid, priv, kty, key_ops):
    pub = priv.public_key()
    out = {"kid": kid, "kty": kty, "key_ops": key_ops}
    if isinstance(pub, ec.EllipticCurvePublicKey):
        n = (pub.curve.key_size + 7) // 8
        nums = pub.public_numbers()
        crv = {256: "P-256", 384: "P-384", 521: "P-521"}[pub.curve.key_size]
        out.update(crv=crv, x=b64u(int_bytes(nums.x, n)), y=b64u(int_bytes(nums.y, n)))
    else:
        nums = pub.public_numbers()
        out.update(n=b64u(int_bytes(nums.n)), e=b64u(int_bytes(nums.e)))
    return out


class VaultError(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class StandIn:
    def __init__(self, dirpath):
        self.ca_pem, self.cert, self.key = make_tls(dirpath)
        self.keys = {}            # name -> [ {version, priv, kty, ops, created} ]
        self.tokens = {}          # token -> expiry (epoch seconds)
        self.token_lifetime = 3600
        self.throttle = 0
        self.retry_after = 1
        self.forbidden = False
        self.log = []             # (method, path, api-version, had_token, status)
        self.sign_times = []
        self.signs = []           # (key name, JWS alg) of every sign call
        self.lock = threading.Lock()
        self.port = self._free_port()
        self.imds_port = self._free_port()
        self.https = self.imds = None
        self.start()

    @staticmethod
    def _free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    @property
    def imds_url(self):
        return f"http://127.0.0.1:{self.imds_port}/metadata/identity/oauth2/token"

    def start(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.https = _Server(("127.0.0.1", self.port), self, ctx)
        self.imds = _Server(("127.0.0.1", self.imds_port), self, None)
        for srv in (self.https, self.imds):
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self):
        for srv in (self.https, self.imds):
            if srv:
                srv.shutdown()
                srv.server_close()
                # Kept-alive connections go too: the vault is gone, not just closed to new ones.
                for sock in list(srv.open_sockets):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        self.https = self.imds = None

    def count(self, method, suffix):
        return sum(1 for m, p, *_ in self.log if m == method and p.endswith(suffix))

    # ---- Entra ID -----------------------------------------------------------------------

    def issue_token(self):
        token = "standin." + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.time() + self.token_lifetime
        return token

    def token_endpoint(self, tenant, form):
        if tenant != TENANT:
            raise VaultError(400, "invalid_tenant", f"tenant {tenant} not found")
        if form.get("grant_type") != "client_credentials":
            raise VaultError(400, "unsupported_grant_type", "only client_credentials")
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            raise VaultError(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        if form.get("scope") != RESOURCE + "/.default":
            raise VaultError(400, "invalid_scope", f"scope {form.get('scope')} is not valid")
        return {"token_type": "Bearer", "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime, "access_token": self.issue_token()}

    def imds_endpoint(self, query, headers):
        if headers.get("Metadata") != "true":
            raise VaultError(400, "invalid_request", "Required metadata header not specified")
        if query.get("api-version") != "2018-02-01" or query.get("resource") != RESOURCE:
            raise VaultError(400, "invalid_request", "bad api-version or resource")
        now = int(time.time())
        return {"access_token": self.issue_token(), "expires_in": str(self.token_lifetime),
                "expires_on": str(now + self.token_lifetime), "not_before": str(now),
                "resource": RESOURCE, "token_type": "Bearer"}

    def openid_configuration(self, tenant):
        base = f"{self.url}/{tenant}"
        return {"token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0", "tenant_region_scope": "EU",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "response_types_supported": ["code", "id_token", "token"],
                "jwks_uri": f"{base}/discovery/v2.0/keys"}

    # ---- Key Vault ----------------------------------------------------------------------

    def check_token(self, auth):
        challenge = {"WWW-Authenticate":
                     f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="{RESOURCE}"'}
        if not auth or not auth.startswith("Bearer "):
            raise VaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", challenge)
        expiry = self.tokens.get(auth[7:])
        if expiry is None:
            raise VaultError(401, "Unauthorized", "AKV10032: Invalid issuer.", challenge)
        if expiry < time.time():
            raise VaultError(401, "Unauthorized", "AKV10022: Invalid audience or token expired.", challenge)

    def vault(self, method, path, query, auth, body_bytes):
        self.check_token(auth)
        if query.get("api-version") not in API_VERSIONS:
            raise VaultError(400, "BadParameter", f"The specified version ({query.get('api-version')}) is not recognized.")
        with self.lock:
            if self.throttle > 0:
                self.throttle -= 1
                raise VaultError(429, "Throttled", "Request was not allowed because of throttling.",
                                 {"Retry-After": str(self.retry_after)})
        if self.forbidden:
            raise VaultError(403, "Forbidden", "Caller is not authorized to perform action on resource. "
                             "Action: 'Microsoft.KeyVault/vaults/keys/sign/action'")
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        if not parts or parts[0] != "keys" or len(parts) < 2 or not parts[1]:
            raise VaultError(404, "NotFound", f"no route {path}")
        name, rest = parts[1], parts[2:]
        body = json.loads(body_bytes) if body_bytes else {}
        if rest == ["create"] and method in ("POST", "PUT"):
            return self.create(name, body)
        if method == "GET" and len(rest) <= 1:
            return self.bundle(name, self.find(name, rest[0] if rest else ""))
        if method == "POST" and len(rest) == 2 and rest[1] in ("sign", "verify"):
            v = self.find(name, rest[0])
            return self.sign(name, v, body) if rest[1] == "sign" else self.verify(name, v, body)
        raise VaultError(405, "BadParameter", f"{method} {path} is not supported")

    def find(self, name, version):
        versions = self.keys.get(name)
        if not versions:
            raise VaultError(404, "KeyNotFound",
                             f"A key with (name/id) {name} was not found in this key vault.")
        if not version:
            return versions[-1]
        for v in versions:
            if v["version"] == version:
                return v
        raise VaultError(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found in this key vault.")

    def create(self, name, body):
        kty = body.get("kty")
        if kty in ("EC", "EC-HSM"):
            curve = CURVES.get(body.get("crv", "P-256"))
            if curve is None:
                raise VaultError(400, "BadParameter", f"unsupported curve {body.get('crv')}")
            priv = ec.generate_private_key(curve)
        elif kty in ("RSA", "RSA-HSM"):
            size = body.get("key_size", 2048)
            if size not in (2048, 3072, 4096):
                raise VaultError(400, "BadParameter", f"unsupported key_size {size}")
            priv = rsa.generate_private_key(65537, size)
        else:
            raise VaultError(400, "BadParameter", f"unsupported kty {kty}")
        ops = body.get("key_ops") or ["sign", "verify"]
        v = {"version": secrets.token_hex(16), "priv": priv, "kty": kty, "ops": ops, "created": int(time.time())}
        with self.lock:
            self.keys.setdefault(name, []).append(v)
        return self.bundle(name, v)

    def bundle(self, name, v):
        kid = f"{self.url}/keys/{name}/{v['version']}"
        return {"key": jwk(kid, v["priv"], v["kty"], v["ops"]),
                "attributes": {"enabled": True, "created": v["created"], "updated": v["created"],
                               "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}}

    def _alg(self, v, alg, digest):
        h = HASHES.get((alg or "")[2:])
        if h is None or alg[:2] not in ("ES", "PS", "RS"):
            raise VaultError(400, "BadParameter", f"unsupported algorithm {alg}")
        is_ec = isinstance(v["priv"], ec.EllipticCurvePrivateKey)
        if is_ec != (alg[:2] == "ES"):
            raise VaultError(400, "BadParameter", f"algorithm {alg} does not fit a {v['kty']} key")
        if len(digest) != h.digest_size:
            raise VaultError(400, "BadParameter", f"digest of {len(digest)} bytes for {alg}")
        return h, is_ec

    def sign(self, name, v, body):
        t0 = time.perf_counter()
        digest = unb64u(body.get("value", ""))
        h, is_ec = self._alg(v, body.get("alg"), digest)
        self.signs.append((name, body.get("alg")))
        priv = v["priv"]
        if is_ec:
            r, s = utils.decode_dss_signature(priv.sign(digest, ec.ECDSA(utils.Prehashed(h))))
            n = (priv.curve.key_size + 7) // 8
            sig = int_bytes(r, n) + int_bytes(s, n)
        elif body["alg"].startswith("PS"):
            sig = priv.sign(digest, padding.PSS(padding.MGF1(h), h.digest_size), utils.Prehashed(h))
        else:
            sig = priv.sign(digest, padding.PKCS1v15(), utils.Prehashed(h))
        self.sign_times.append(time.perf_counter() - t0)
        return {"kid": f"{self.url}/keys/{name}/{v['version']}", "value": b64u(sig)}

    def verify(self, name, v, body):
        digest = unb64u(body.get("digest", ""))
        sig = unb64u(body.get("value", ""))
        h, is_ec = self._alg(v, body.get("alg"), digest)
        pub = v["priv"].public_key()
        try:
            if is_ec:
                n = len(sig) // 2
                der = utils.encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
                pub.verify(der, digest, ec.ECDSA(utils.Prehashed(h)))
            elif body["alg"].startswith("PS"):
                pub.verify(sig, digest, padding.PSS(padding.MGF1(h), h.digest_size), utils.Prehashed(h))
            else:
                pub.verify(sig, digest, padding.PKCS1v15(), utils.Prehashed(h))
            return {"value": True}
        except InvalidSignature:
            return {"value": False}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, standin, ctx):
        self.standin, self.ctx = standin, ctx
        self.open_sockets = set()
        super().__init__(addr, _Handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.ctx:
            sock = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.open_sockets.add(sock)
        return sock, addr

    def shutdown_request(self, request):
        self.open_sockets.discard(request)
        super().shutdown_request(request)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for a delayed ACK
    # (40 ms) and the stand-in would measure Linux's ACK timer instead of itself.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def handle_any(self, method):
        si = self.server.standin
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = url.path
        auth = self.headers.get("Authorization")
        headers = {"Content-Type": "application/json; charset=utf-8"}
        try:
            if self.server.ctx is None:
                if path != "/metadata/identity/oauth2/token":
                    raise VaultError(404, "NotFound", path)
                status, out = 200, si.imds_endpoint(query, self.headers)
            elif path.endswith("/oauth2/v2.0/token") and method == "POST":
                form = dict(urllib.parse.parse_qsl(body.decode()))
                status, out = 200, si.token_endpoint(path.split("/")[1], form)
            elif path.endswith("/v2.0/.well-known/openid-configuration"):
                status, out = 200, si.openid_configuration(path.split("/")[1])
            else:
                status, out = 200, si.vault(method, path, query, auth, body)
        except VaultError as e:
            status, out = e.status, {"error": {"code": e.code, "message": e.message}}
            if path.endswith("/token"):
                out = {"error": e.code, "error_description": e.message}
            headers.update(e.headers)
        si.log.append((method, path, query.get("api-version"), bool(auth), status))
        data = json.dumps(out).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
