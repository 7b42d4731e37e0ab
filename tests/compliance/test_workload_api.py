"""The SPIFFE Workload API on esm's agent socket, called by the `spiffe` Python package
(py-spiffe) as a SPIFFE library would call SPIRE's agent."""

import os

import pytest
from spiffe import WorkloadApiClient

from conftest import run

TD = "example.org"
WEB = f"spiffe://{TD}/ns/prod/sa/web"


def test_py_spiffe_fetches_svid_and_bundle(tmp_path, stack):
    """Unmodified py-spiffe: gRPC C-core sends the %-encoded socket path as :authority, which
    esm's agent socket repairs (agent/src/h2_authority.rs)."""
    esm, _, _ = stack
    data = tmp_path / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    esm(data)
    sock = f"unix://{data / 'agent.sock'}"
    # No entry yet: this process is not entitled to anything.
    with WorkloadApiClient(socket_path=sock, default_timeout=10) as c:
        with pytest.raises(Exception) as e:
            c.fetch_x509_svid()
        assert "PERMISSION_DENIED" in str(e.value) or "no registration entry" in str(e.value)
    run("entry", "create", "--spiffe-id", WEB, "--selector", f"unix:uid:{os.getuid()}", "--dir", data)
    with WorkloadApiClient(socket_path=sock, default_timeout=10) as c:
        svid = c.fetch_x509_svid()          # py-spiffe parses and checks the SVID rules
        assert str(svid.spiffe_id) == WEB
        assert len(svid.cert_chain) == 2
        bundles = c.fetch_x509_bundles()
        bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        assert bundle is not None and len(bundle.x509_authorities) >= 1
        ctx = c.fetch_x509_context()
        assert [str(s.spiffe_id) for s in ctx.x509_svids] == [WEB]
