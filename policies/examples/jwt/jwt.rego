# Bearer-token (JWT) claims: reads need the "reader" role, writes the "writer" role, and the
# x-tenant header must name the token's tenant (tid). The token is verified with
# io.jwt.decode_verify against data.jwt: issuer, audience and a key. In production leave
# `secret` out and set [authz] jwks = "<issuer's JWKS file>" (Entra ID, Keycloak, ...):
# with neither cert nor secret, esm verifies against that JWKS. The subject goes upstream.
package envoy.authz

import rego.v1

default allow := {"allowed": false, "http_status": 401, "headers": {"www-authenticate": "Bearer"}}

http := input.attributes.request.http

bearer := t if {
	v := http.headers.authorization
	startswith(v, "Bearer ")
	t := trim_prefix(v, "Bearer ")
}

constraints := object.union(
	{"iss": data.jwt.issuer, "aud": data.jwt.audience},
	object.filter(data.jwt, ["cert", "secret"]),
)

claims := c if {
	[valid, _, c] := io.jwt.decode_verify(bearer, constraints)
	valid
}

needed := "reader" if http.method in {"GET", "HEAD"}

needed := "writer" if http.method in {"POST", "PUT", "PATCH", "DELETE"}

permitted if {
	needed in claims.roles
	http.headers["x-tenant"] == claims.tid
}

allow := {"allowed": true, "headers": {"x-jwt-sub": claims.sub}} if permitted

# A valid token that lacks the role or tenant is forbidden, not unauthenticated.
allow := {"allowed": false, "http_status": 403, "body": "insufficient role or wrong tenant"} if {
	claims
	not permitted
}
