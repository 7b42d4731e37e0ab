# Path and method RBAC by role, with the role from a header set by a trusted gateway, and
# a structured result: an upstream header on allow, status, headers and body on deny.
package envoy.authz

import rego.v1

default allow := {"allowed": false, "http_status": 403, "body": "forbidden by policy", "headers": {"x-esm-denied-by": "rbac"}}

roles := {
	"viewer": [{"method": "GET", "prefix": "/reports"}],
	"operator": [{"method": "GET", "prefix": "/"}, {"method": "POST", "prefix": "/commands"}],
}

role := input.attributes.request.http.headers["x-role"]

permitted if {
	some p in roles[role]
	p.method == input.attributes.request.http.method
	startswith(input.attributes.request.http.path, p.prefix)
}

allow := {"allowed": true, "headers": {"x-esm-role": role}, "request_headers_to_remove": ["x-role"]} if permitted
