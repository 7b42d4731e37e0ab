# The network (TCP) ext_authz filter: no HTTP part, so the decision is made on the peers'
# SPIFFE IDs and the destination port (Modbus/TCP on 502, OPC UA on 4840).
package envoy.authz

import rego.v1

default allow := false

industrial_ports := {502, 4840}

allow if {
	not input.attributes.request.http
	input.attributes.destination.address.socketAddress.portValue in industrial_ports
	startswith(input.source.spiffe_id, "spiffe://example.org/ns/plant/")
}
