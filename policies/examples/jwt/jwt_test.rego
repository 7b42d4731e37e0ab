package envoy.authz

import rego.v1

# HS256 tokens signed with "example-secret"; iss https://login.example.org, aud orders-api,
# tid plant-7, exp in 2100.
reader := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUub3JnIiwiYXVkIjoib3JkZXJzLWFwaSIsImV4cCI6NDEwMjQ0NDgwMCwic3ViIjoiYWxpY2UiLCJ0aWQiOiJwbGFudC03Iiwicm9sZXMiOlsicmVhZGVyIl19.nd68n7fT2Zkzy2OvVJ93fcru3-f9n6q1-4ki-JJAhto"

writer := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUub3JnIiwiYXVkIjoib3JkZXJzLWFwaSIsImV4cCI6NDEwMjQ0NDgwMCwic3ViIjoiYm9iIiwidGlkIjoicGxhbnQtNyIsInJvbGVzIjpbInJlYWRlciIsIndyaXRlciJdfQ.dQ_e6iqzpqrnqQskvfOnaoBlQIfgkd6nlIcRpypQCC0"

expired := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUub3JnIiwiYXVkIjoib3JkZXJzLWFwaSIsImV4cCI6MTAwMDAwMDAwMCwic3ViIjoiYWxpY2UiLCJ0aWQiOiJwbGFudC03Iiwicm9sZXMiOlsid3JpdGVyIl19.imL0raM3A-ekgFTR1ANmun2GeDJJUzdF0EDgfCM47BE"

other_audience := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUub3JnIiwiYXVkIjoiYmlsbGluZyIsImV4cCI6NDEwMjQ0NDgwMCwic3ViIjoiYWxpY2UiLCJ0aWQiOiJwbGFudC03Iiwicm9sZXMiOlsid3JpdGVyIl19.SNuY1v-w29wipA-q2WGfELLWKJbnJm2mWCbxHSa7w-A"

forged := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUub3JnIiwiYXVkIjoib3JkZXJzLWFwaSIsImV4cCI6NDEwMjQ0NDgwMCwic3ViIjoiYWxpY2UiLCJ0aWQiOiJwbGFudC03Iiwicm9sZXMiOlsid3JpdGVyIl19._uWNDQqVHStWXv30PEA-6Aaq78UxSsHQ5ZrKFt-ViIA"

cfg := {"issuer": "https://login.example.org", "audience": "orders-api", "secret": "example-secret"}

req(method, token, tenant) := {"attributes": {"request": {"http": {
	"method": method,
	"path": "/orders",
	"headers": {"authorization": concat(" ", ["Bearer", token]), "x-tenant": tenant},
}}}}

test_reader_reads if {
	d := allow with input as req("GET", reader, "plant-7") with data.jwt as cfg
	d.allowed
	d.headers["x-jwt-sub"] == "alice"
}

test_reader_cannot_write if {
	d := allow with input as req("POST", reader, "plant-7") with data.jwt as cfg
	not d.allowed
	d.http_status == 403
}

test_writer_writes if {
	d := allow with input as req("POST", writer, "plant-7") with data.jwt as cfg
	d.allowed
}

test_wrong_tenant_forbidden if {
	d := allow with input as req("GET", writer, "plant-9") with data.jwt as cfg
	d.http_status == 403
}

test_bad_tokens_unauthenticated if {
	every t in [expired, other_audience, forged, "not-a-token"] {
		d := allow with input as req("GET", t, "plant-7") with data.jwt as cfg
		not d.allowed
		d.http_status == 401
	}
}

test_missing_header_unauthenticated if {
	d := allow with input as {"attributes": {"request": {"http": {"method": "GET", "headers": {}}}}} with data.jwt as cfg
	d.http_status == 401
}
