"""Every writer of the data dir on a full disk (a small tmpfs): `esm init`, `esm cert issue`,
`esm audit export` and the bundle service's persisted bundle each fail with a clear error
naming the disk, write nothing half, and succeed once space is freed. (The audit store itself under a full disk, with Checks
flowing, is test_audit_faults.py.) Needs root (mount)."""

import json
import os
import subprocess

import pytest

from conftest import run

TD = "example.org"


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt):
    """Fills the disk to the last byte; returns the filler to remove."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
        for _ in range(64):
            try:
                f.write(b"\0" * 512)
            except OSError:
                pass
    return filler


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_init_on_a_full_disk_fails_cleanly_and_succeeds_after(disk):
    filler = fill(disk)
    data = disk / "d"
    p = run("init", "--trust-domain", TD, "--dir", data, check=False)
    assert p.returncode != 0
    assert "No space left on device" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not data.exists() or files(data) == []
    filler.unlink()
    run("init", "--trust-domain", TD, "--dir", data)
    assert json.loads((data / "ca" / "state.json").read_text())


def test_issue_and_export_on_a_full_disk_leave_nothing_half_written(disk):
    data = disk / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/a", "--out", disk / "a", "--dir", data)
    before = {f: (data / f).read_bytes() for f in files(data) if not f.startswith("audit.db")}
    filler = fill(disk)

    p = run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/b", "--out", disk / "b", "--dir", data,
            check=False)
    assert p.returncode != 0
    assert "No space left" in p.stderr or "disk" in p.stderr, p.stderr
    assert not (disk / "b").exists() or files(disk / "b") == []
    p = run("audit", "export", "--out", disk / "export.jsonl", "--dir", data, check=False)
    assert p.returncode != 0
    assert not (disk / "export.jsonl").exists()
    # The CA's files are as they were: nothing cut short, no staging files left.
    after = {f: (data / f).read_bytes() for f in files(data) if not f.startswith("audit.db")}
    assert after == before

    filler.unlink()
    run("cert", "issue", "--spiffe-id", f"spiffe://{TD}/b", "--out", disk / "b", "--dir", data)
    run("audit", "export", "--out", disk / "export.jsonl", "--dir", data)
    lines = (data / "ca" / "serials.jsonl").read_text().splitlines()
    assert [json.loads(line)["spiffe_id"] for line in lines] == [f"spiffe://{TD}/a", f"spiffe://{TD}/b"]
    run("audit", "verify", "--dir", data)


def test_a_bundle_download_on_a_full_disk_keeps_the_last_good_one(disk, tmp_path, stack):
    """The bundle service's persisted copy lives on the full disk: the new bundle is not
    kept (no part of it left), the old one keeps deciding, and once space is freed the new
    one is taken."""
    from envoy_harness import bootstrap, free_port, request, wait_for
    from test_bundle_service import BundleServer
    from test_ext_authz_features import POLICY, Es256, init

    esm, envoy, up = stack
    data = init(tmp_path)
    signer = Es256("bundle")
    (data / "bundle.pub.pem").write_text(signer.pem())
    (data / "bundles").symlink_to(disk)
    srv = BundleServer()
    try:
        srv.publish(tmp_path, {"authz/policy.rego": POLICY, "data.json": json.dumps({"open": ["a"]})}, signer, "r1")
        env = {"ESM_AUTHZ_BUNDLE_URL": srv.url, "ESM_AUTHZ_BUNDLE_KEY": "bundle.pub.pem",
               "ESM_AUTHZ_BUNDLE_POLL_MIN": "200ms", "ESM_AUTHZ_BUNDLE_POLL_MAX": "300ms"}
        _, authz, _ = esm(data, env)
        port = free_port()
        envoy(bootstrap(free_port(), authz, up, http_port=port))
        assert request(port, "GET", "/a")[0] == 200
        filler = fill(disk)
        # Larger than the page the old ETag file frees when it is removed.
        pad = os.urandom(20_000).hex()
        srv.publish(tmp_path, {"authz/policy.rego": POLICY, "data.json": json.dumps({"open": ["b"], "pad": pad})},
                    signer, "r2")
        served = len(srv.seen)
        wait_for(lambda: len(srv.seen) >= served + 3, "polls while the disk is full")
        assert request(port, "GET", "/a")[0] == 200
        assert request(port, "GET", "/b")[0] == 403
        # The old bundle is whole; neither the new one nor a part of it is there.
        assert sorted(p.name for p in disk.iterdir())[:1] == ["default.tar.gz"]
        assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")]
        filler.unlink()
        wait_for(lambda: request(port, "GET", "/b")[0] == 200, "the new bundle once space is freed")
    finally:
        srv.stop()
