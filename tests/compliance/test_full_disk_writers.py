"""Every writer of the data dir on a full disk (a small tmpfs): `esm init`, `esm cert issue`
and `esm audit export` each fail with a clear error naming the disk, write nothing half, and
succeed once space is freed. (The audit store itself under a full disk, with Checks
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
