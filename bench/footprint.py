#!/usr/bin/env python3
"""Footprint on an edge node: the release binary's size and an idle `esm serve`'s memory.

    bench/footprint.py              # target/release/esm, built when missing
    bench/footprint.py --json out.json

Edge boxes are small, so two budgets are set: the binary at most 30 MB (--max-binary-mb) and
an idle server at most 40 MiB of RSS (--max-idle-mib). Idle means: a fresh data dir made by
`esm init`, `esm serve` with its defaults (SQLite audit store, the default policy, SDS on
the agent socket) on free loopback ports, ready (`/readyz` 200), then left alone for
--settle seconds, RSS read from /proc every second over the last --window seconds (the
highest reading counts). Everything runs in a temp dir and is stopped at the end.

Also reported: the sizes of the binary's largest ELF sections (`size -A`, when present), so a
jump can be traced to code, read-only data or symbols; and whether a panic's backtrace names
functions, by the symbol table being present (`.symtab`).

Exit 0 when both budgets hold, 1 when one does not, 2 when esm would not start."""

import argparse
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from soak import rss_kib  # noqa: E402  (one reading of VmRSS for every bench)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sections(binary):
    """The binary's five largest sections, name -> bytes, or {} without binutils' size."""
    if not shutil.which("size"):
        return {}
    out = subprocess.run(["size", "-A", str(binary)], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            rows.append((parts[0], int(parts[1])))
    return dict(sorted(rows, key=lambda r: -r[1])[:5])


def ready(admin, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def idle_rss(binary, settle, window):
    """Highest RSS (KiB) of a ready, untouched `esm serve` over the last `window` seconds."""
    with tempfile.TemporaryDirectory(prefix="esm-footprint-") as tmp:
        data = pathlib.Path(tmp) / "data"
        subprocess.run([str(binary), "init", "--trust-domain", "example.org",
                        "--dir", str(data)], check=True, capture_output=True, timeout=60)
        admin = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
        env["ESM_ADMIN_LISTEN"] = f"127.0.0.1:{admin}"
        env["ESM_AUTHZ_LISTEN"] = f"127.0.0.1:{free_port()}"
        log = open(pathlib.Path(tmp) / "esm.log", "w")
        proc = subprocess.Popen([str(binary), "serve", "--dir", str(data)], env=env,
                                stdout=log, stderr=log)
        try:
            if not ready(admin, proc, 30):
                log.flush()
                sys.stderr.write((pathlib.Path(tmp) / "esm.log").read_text()[-2000:])
                return None
            time.sleep(max(0.0, settle - window))
            readings = []
            for _ in range(int(window)):
                readings.append(rss_kib(proc.pid))
                time.sleep(1)
            return max(readings)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", type=pathlib.Path,
                   default=pathlib.Path(os.environ.get("ESM_BIN", ROOT / "target/release/esm")))
    p.add_argument("--settle", type=float, default=20.0, help="seconds idle before the end")
    p.add_argument("--window", type=float, default=10.0, help="seconds of RSS readings")
    p.add_argument("--max-binary-mb", type=float, default=30.0)
    p.add_argument("--max-idle-mib", type=float, default=40.0)
    p.add_argument("--json", type=pathlib.Path)
    args = p.parse_args(argv)

    if not args.binary.exists():
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "esm"],
                       cwd=ROOT, check=True)
    size = args.binary.stat().st_size
    secs = sections(args.binary)
    kib = idle_rss(args.binary, args.settle, args.window)
    if kib is None:
        print("footprint: esm serve did not become ready", file=sys.stderr)
        return 2
    res = {
        "binary": str(args.binary),
        "binary_mb": round(size / 1e6, 1),
        "largest_sections_mb": {k: round(v / 1e6, 1) for k, v in secs.items()},
        "symbols_kept": has_section(args.binary, ".symtab"),
        "idle_rss_mib": round(kib / 1024, 1),
        "max_binary_mb": args.max_binary_mb,
        "max_idle_mib": args.max_idle_mib,
    }
    ok = res["binary_mb"] <= args.max_binary_mb and res["idle_rss_mib"] <= args.max_idle_mib
    print(f"footprint: binary {res['binary_mb']} MB (budget {args.max_binary_mb:g}), "
          f"idle serve RSS {res['idle_rss_mib']} MiB (budget {args.max_idle_mib:g}), "
          f"symbols {'kept' if res['symbols_kept'] else 'STRIPPED'}; "
          f"largest sections {res['largest_sections_mb']} -> {'ok' if ok else 'OVER BUDGET'}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0 if ok else 1


def has_section(binary, name):
    """Whether the ELF file has section `name` (False without binutils' readelf)."""
    if not shutil.which("readelf"):
        return False
    out = subprocess.run(["readelf", "-S", "-W", str(binary)], capture_output=True,
                         text=True).stdout
    return f" {name} " in out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
