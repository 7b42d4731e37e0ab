#!/usr/bin/env python3
"""`esm report` over a large store: wall time and peak RSS of every format, next to the
baseline measured in the same run (one sequential read of the same events, no checks).

    bench/report.py [--events 10000000] [--days 90] [--dir target/report-bench]

Builds release binaries, makes a data dir with `esm init`, writes the events through
esm-audit's writer (`report/examples/report_bench.rs generate`), then times each run with
wait4() for the peak RSS. SQLite only (the default store)."""

import argparse
import datetime
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
ESM = ROOT / "target" / "release" / "esm"
HELPER = ROOT / "target" / "release" / "examples" / "report_bench"


def timed(args):
    """Runs args; returns (exit code, seconds, CPU seconds, peak RSS MiB, output tail)."""
    start = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.monotonic() - start
    out = p.stdout.read()
    p.stdout.close()
    cpu = usage.ru_utime + usage.ru_stime
    return os.waitstatus_to_exitcode(status), secs, cpu, usage.ru_maxrss / 1024, out.strip()[-300:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--dir", default=str(ROOT / "target" / "report-bench"))
    ap.add_argument("--reuse", action="store_true", help="keep an existing generated store")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "esm"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "esm-report", "--example",
                    "report_bench"], cwd=ROOT, check=True)
    base = pathlib.Path(a.dir)
    data = base / "data"
    if not (a.reuse and (data / "audit.db").exists()):
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        subprocess.run([str(ESM), "init", "--trust-domain", "example.org", "--dir", str(data)],
                       check=True, capture_output=True, timeout=120)
        code, secs, _, rss, out = timed([str(HELPER), "generate", str(data), str(a.events), str(a.days)])
        print(f"generated {a.events} events over {a.days} days through the writer: {secs:.1f} s ({out.splitlines()[-1]})")
        assert code == 0, out
    size = sum(f.stat().st_size for f in data.glob("audit.db*"))
    print(f"store: {size / 2**20:.0f} MiB")
    today = datetime.datetime.now(datetime.timezone.utc).date()
    frm = (today - datetime.timedelta(days=a.days + 1)).isoformat()
    to = today.isoformat()
    rows = []
    code, secs, cpu, rss, out = timed([str(HELPER), "read", str(data)])
    assert code == 0, out
    rows.append(("baseline: sequential read, no checks", secs, cpu, rss, out))
    for fmt in ["json", "md", "html", "oscal"]:
        out_file = base / f"report.{fmt}"
        code, secs, cpu, rss, out = timed([str(ESM), "report", "--framework", "soc2", "--from", frm, "--to", to,
                                      "--format", fmt, "--out", str(out_file), "--dir", str(data)])
        assert code in (0, 1), out
        rows.append((f"esm report --format {fmt}", secs, cpu, rss, out.splitlines()[-1] if out else ""))
    print(f"\n| run | wall s | CPU s | peak RSS (MiB) | wall vs. baseline |\n|---|---|---|---|---|")
    for name, secs, cpu, rss, _ in rows:
        print(f"| {name} | {secs:.1f} | {cpu:.1f} | {rss:.0f} | {secs / rows[0][1]:.2f} |")
    print()
    for name, *_, out in rows:
        print(f"{name}: {out}")


if __name__ == "__main__":
    sys.exit(main())
