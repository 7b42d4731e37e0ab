"""The crate layout docs/architecture.md describes, checked against Cargo's own view of it.

A dependency added for convenience (a gRPC server in the CA, the CA in authz) would undo the
split silently: the code still builds. These tests read the manifests through `cargo metadata`
and the resolved graph through `cargo tree`, so they fail the day such an edge appears.
"""

import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Which esm crates each crate may use in normal (non-dev) dependencies.
ALLOWED = {
    "esm-identity": set(),
    "esm-histogram": set(),
    "esm-listener": set(),
    "esm-proto": set(),
    "esm-audit": {"esm-histogram"},
    "esm-ca": {"esm-audit", "esm-identity"},
    "esm-authz": {"esm-audit", "esm-histogram", "esm-identity", "esm-listener"},
    "esm-agent": {
        "esm-audit", "esm-ca", "esm-histogram", "esm-identity", "esm-listener", "esm-proto",
    },
    "esm-report": {"esm-audit"},
    "esm-config": {"esm-audit", "esm-authz", "esm-ca", "esm-identity"},
}

# What would make esm-ca a server: gRPC, HTTP/2, HTTP servers, a TLS acceptor.
SERVER_CRATES = {"tonic", "h2", "hyper", "hyper-util", "axum", "tower", "tokio-rustls"}


def cargo(*args: str) -> str:
    out = subprocess.run(
        ["cargo", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout


def members() -> dict[str, dict]:
    meta = json.loads(cargo("metadata", "--format-version", "1", "--no-deps", "--locked"))
    ids = set(meta["workspace_members"])
    return {p["name"]: p for p in meta["packages"] if p["id"] in ids}


def resolved(package: str) -> set[str]:
    tree = cargo(
        "tree", "-p", package, "-e", "normal", "--prefix", "none", "--locked", "-f", "{p}"
    )
    return {line.split()[0] for line in tree.splitlines() if line.strip()}


def test_every_crate_lives_in_the_folder_named_after_it():
    for name, p in members().items():
        folder = pathlib.Path(p["manifest_path"]).parent
        if folder == ROOT:
            assert name == "esm"
            continue
        assert name == f"esm-{folder.relative_to(ROOT)}", (name, folder)


def test_esm_crates_depend_only_in_the_documented_direction():
    found = members()
    assert set(found) - {"esm"} == set(ALLOWED), "a crate was added or removed: update ALLOWED"
    for name, p in found.items():
        if name == "esm":
            continue
        uses = {d["name"] for d in p["dependencies"]
                if d["name"].startswith("esm") and d["kind"] is None}
        assert uses <= ALLOWED[name], f"{name} now depends on {sorted(uses - ALLOWED[name])}"


def test_the_ca_has_no_grpc_http2_or_tls_server_crate():
    ca = resolved("esm-ca")
    assert "esm-ca" in ca and "ring" in ca, "cargo tree printed something unexpected"
    assert not ca & SERVER_CRATES, f"esm-ca pulls in {sorted(ca & SERVER_CRATES)}"
    # The same query finds them where they belong, so an empty answer above is not blindness.
    assert {"tonic", "h2", "hyper"} <= resolved("esm-agent")
