package envoy.authz

import rego.v1

from(id) := {"source": {"spiffe_id": id}, "attributes": {"request": {"http": {"method": "GET", "path": "/"}}}}

test_exact_id_wins if {
	d := allow with input as from("spiffe://example.org/ns/prod/sa/batch-export")
	d.allowed
	d.headers["x-esm-rate-tier"] == "bulk"
	d.dynamic_metadata.rate_tier == "bulk"
}

test_longest_prefix_wins if {
	d := allow with input as from("spiffe://example.org/ns/prod/sa/hmi-line3")
	d.headers["x-esm-rate-tier"] == "interactive"
}

test_namespace_default if {
	d := allow with input as from("spiffe://example.org/ns/prod/sa/api")
	d.headers["x-esm-rate-tier"] == "standard"
}

test_blocked_caller_gets_429 if {
	d := allow with input as from("spiffe://example.org/ns/prod/sa/scraper")
	not d.allowed
	d.http_status == 429
}

test_unknown_caller_denied if {
	d := allow with input as from("spiffe://other.org/x")
	not d.allowed
	d.http_status == 403
}

test_no_identity_denied if {
	d := allow with input as {"attributes": {}}
	not d.allowed
}
