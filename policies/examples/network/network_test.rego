package envoy.authz

import rego.v1

c(src, port) := {
	"attributes": {"destination": {"address": {"socketAddress": {"address": "10.1.0.5", "portValue": port}}}},
	"source": {"spiffe_id": src},
}

test_plant_workload_reaches_modbus if {
	allow with input as c("spiffe://example.org/ns/plant/sa/hmi", 502)
}

test_office_workload_cannot_reach_modbus if {
	not allow with input as c("spiffe://example.org/ns/office/sa/laptop", 502)
}

test_plant_workload_other_port_denied if {
	not allow with input as c("spiffe://example.org/ns/plant/sa/hmi", 22)
}

test_http_requests_are_not_this_rule if {
	not allow with input as object.union(c("spiffe://example.org/ns/plant/sa/hmi", 502), {"attributes": {"request": {"http": {"method": "GET"}}}})
}
