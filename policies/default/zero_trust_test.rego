package envoy.authz

import rego.v1

req(src, dst, method, path) := {
	"attributes": {"request": {"http": {"method": method, "path": path}}},
	"source": {"spiffe_id": src},
	"destination": {"spiffe_id": dst},
}

conn(src, dst) := {"source": {"spiffe_id": src}, "destination": {"spiffe_id": dst}}

api := "spiffe://example.org/ns/prod/sa/api"

web := "spiffe://example.org/ns/prod/sa/web"

test_granted_caller_method_and_path_allowed if {
	allow with input as req(web, api, "GET", "/items/7")
}

test_granted_caller_wrong_method_denied if {
	not allow with input as req(web, api, "DELETE", "/items/7")
}

test_granted_caller_wrong_path_denied if {
	not allow with input as req(web, api, "GET", "/admin")
}

test_unknown_caller_denied if {
	not allow with input as req("spiffe://example.org/ns/prod/sa/other", api, "GET", "/items")
}

test_no_identity_denied if {
	not allow with input as {"attributes": {"request": {"http": {"method": "GET", "path": "/items"}}}}
}

test_unrestricted_grant_admits_tcp if {
	allow with input as conn("spiffe://example.org/ns/plant/sa/scada", "spiffe://example.org/ns/plant/sa/plc-gateway")
}

test_restricted_grant_does_not_admit_tcp if {
	not allow with input as conn(web, api)
}
