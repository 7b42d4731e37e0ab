"""The SPIFFE Workload API on esm's agent socket, called by the `spiffe` Python package
(py-spiffe) as a SPIFFE library would call SPIRE's agent."""

import os

import grpc
import pytest
from spiffe import WorkloadApiClient

from conftest import run

TD = "example.org"
WEB = f"spiffe://{TD}/ns/prod/sa/web"


@pytest.fixture
def localhost_authority(monkeypatch):
    """gRPC C-core (Python, also Java and C++) sends the %-encoded socket path as the HTTP/2
    :authority on Unix sockets, which the h2 crate under tonic rejects as malformed
    (hyperium/h2#487, unmerged). go-spiffe sends "localhost". Until esm can accept such
    requests, Python clients set the authority the way go-spiffe does; this fixture does
    that for py-spiffe, which builds its channel itself."""
    real = grpc.insecure_channel

    def channel(target, options=None, *a, **kw):
        opts = list(options or []) + [("grpc.default_authority", "localhost")]
        return real(target, opts, *a, **kw)

    monkeypatch.setattr(grpc, "insecure_channel", channel)


def test_py_spiffe_fetches_svid_and_bundle(tmp_path, stack, localhost_authority):
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
