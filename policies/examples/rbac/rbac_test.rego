package envoy.authz

import rego.v1

r(role, method, path) := {"attributes": {"request": {"http": {
	"method": method,
	"path": path,
	"headers": {"x-role": role},
}}}}

test_viewer_reads_reports if {
	d := allow with input as r("viewer", "GET", "/reports/q3")
	d.allowed
	d.headers["x-esm-role"] == "viewer"
}

test_viewer_cannot_post if {
	d := allow with input as r("viewer", "POST", "/commands")
	not d.allowed
	d.http_status == 403
	d.body == "forbidden by policy"
}

test_operator_posts_commands if {
	d := allow with input as r("operator", "POST", "/commands/start")
	d.allowed
}

test_unknown_role_denied if {
	d := allow with input as r("guest", "GET", "/")
	not d.allowed
}
