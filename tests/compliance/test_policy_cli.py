"""`esm policy test` and `esm policy eval` compile a policy as `serve` and `esm policy check`
do: OPA's output-argument calls (`io.jwt.verify_hs256(t, k, ok)`) are rewritten, so a policy
written for OPA-Envoy tests and evaluates unchanged, and one that cannot be rewritten is
refused with the file, the line and the rewrite to make."""

import json

from conftest import run

# As OPA's own test cases write it: the third argument is the output.
POLICY = """package envoy.authz

import rego.v1

default allow := false

allow if {
    io.jwt.verify_hs256(input.token, "secret", ok)
    ok
}

test_a_forged_token_is_not_allowed if {
    not allow with input as {"token": "eyJhbGciOiJIUzI1NiJ9.e30.AAAA"}
}
"""


def test_output_argument_policies_test_and_evaluate_as_they_serve(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "policy.rego").write_text(POLICY)
    run("policy", "check", d)
    out = run("policy", "test", "-v", d).stdout
    assert "PASS: 1/1" in out, out
    inp = tmp_path / "input.json"
    inp.write_text(json.dumps({"token": "not.a.token"}))
    out = run("policy", "eval", "--input", inp, d).stdout
    assert "decision: deny" in out, out


def test_an_output_argument_inside_an_expression_is_refused_with_its_line(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "policy.rego").write_text(
        "package envoy.authz\nimport rego.v1\ndefault allow := false\n"
        "allow if { x := [ok | io.jwt.verify_hs256(input.t, \"k\", ok)]; x[0] }\n"
        "test_x if { not allow }\n")
    for args in (["policy", "test", d], ["policy", "eval", "--input", "/dev/null", d]):
        p = run(*args, check=False)
        assert p.returncode != 0
        assert "policy.rego:4" in p.stderr, p.stderr
