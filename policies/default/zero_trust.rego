# The default zero-trust policy: deny unless the caller's SPIFFE ID is granted the
# destination. Grants live in data.json:
#   services[<destination SPIFFE ID>].callers[] = {spiffe_id, methods?, path_prefixes?}
# A grant with methods or path prefixes only matches HTTP requests; a grant without them
# also admits the network (TCP) filter's connections.
package envoy.authz

import rego.v1

# Only the request's method and path are read (never the whole request), so two requests
# that agree on identities, method and path share one decision (esm's decision memo).
import input.attributes.request.http as http_request

default allow := false

allow if {
	some grant in data.services[input.destination.spiffe_id].callers
	grant.spiffe_id == input.source.spiffe_id
	method_ok(grant)
	path_ok(grant)
}

method_ok(grant) if not grant.methods

method_ok(grant) if http_request.method in grant.methods

path_ok(grant) if not grant.path_prefixes

path_ok(grant) if {
	some prefix in grant.path_prefixes
	startswith(http_request.path, prefix)
}
