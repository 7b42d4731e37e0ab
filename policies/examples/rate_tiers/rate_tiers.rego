# Rate tiers by identity: every caller's SPIFFE ID maps to a tier (data.tiers, by exact ID
# or by path prefix); the tier goes upstream as x-esm-rate-tier and into dynamic metadata,
# where Envoy's rate-limit filter reads it as a descriptor. Blocked callers are refused.
package envoy.authz

import rego.v1

caller := input.source.spiffe_id

tier := data.tiers.by_id[caller]

tier := t if {
	not data.tiers.by_id[caller]
	prefixes := [p | some p, _ in data.tiers.by_prefix; startswith(caller, p)]
	count(prefixes) > 0
	longest := max({count(p) | some p in prefixes})
	some p in prefixes
	count(p) == longest
	t := data.tiers.by_prefix[p]
}

default allow := {"allowed": false, "http_status": 403, "body": "caller has no rate tier"}

allow := {"allowed": false, "http_status": 429, "body": "caller is blocked"} if tier == "blocked"

allow := {
	"allowed": true,
	"headers": {"x-esm-rate-tier": tier},
	"dynamic_metadata": {"rate_tier": tier},
} if {
	tier
	tier != "blocked"
}
