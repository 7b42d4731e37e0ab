#!/usr/bin/env python3
"""`esm report` and `esm audit verify` over a large store, on SQLite and on PostgreSQL: wall
time, CPU time and peak RSS of every report format and of verification, next to the
baseline measured in the same run (one sequential read of the same events, no checks).

    bench/report.py [--events 10000000] [--days 90] [--dir target/report-bench]
                    [--stores sqlite,postgres] [--pg-url postgres://postgres@127.0.0.1:5432/test]
                    [--pg-schema esm_report_bench] [--reuse] [--bin DIR ...]

Builds release binaries (or takes `esm` and `report_bench` from each `--bin DIR`, run in
turn, to compare builds in one run), makes a data dir per store with `esm init`, writes the
events through esm-audit's writer (`report/examples/report_bench.rs generate`), then times
each run with wait4() for CPU time and peak RSS. The PostgreSQL store lives in its own
schema, dropped and refilled unless --reuse is given."""

import argparse
import datetime
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


def build():
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "esm"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "esm-report", "--example",
                    "report_bench"], cwd=ROOT, check=True)
    return ROOT / "target" / "release", ROOT / "target" / "release" / "examples"


def psql(url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   capture_output=True)


def prepare(store, base, a, esm, helper):
    """The data dir of `store`, with its events generated unless --reuse finds them."""
    data = base / store / "data"
    url = a.pg_url if store == "postgres" else None
    have = (data / "esm.toml").exists() and (store == "postgres" or (data / "audit.db").exists())
    if not (a.reuse and have):
        shutil.rmtree(base / store, ignore_errors=True)
        (base / store).mkdir(parents=True)
        subprocess.run([str(esm), "init", "--trust-domain", "example.org", "--dir", str(data)],
                       check=True, capture_output=True, timeout=120)
        if url:
            psql(url, f"DROP SCHEMA IF EXISTS {a.pg_schema} CASCADE")
            cfg = data / "esm.toml"
            text = cfg.read_text().replace('url = "sqlite://audit.db"', f'url = "{url}"', 1)
            text = text.replace('schema = ""', f'schema = "{a.pg_schema}"', 1)
            cfg.write_text(text)
        args = [str(helper), "generate", str(data), str(a.events), str(a.days)]
        code, secs, _, _, out = timed(args + ([url, a.pg_schema] if url else []))
        assert code == 0, out
        print(f"{store}: generated {a.events} events over {a.days} days through the writer: "
              f"{secs:.1f} s ({out.splitlines()[-1]})")
    return data, url


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--dir", default=str(ROOT / "target" / "report-bench"))
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/test")
    ap.add_argument("--pg-schema", default="esm_report_bench")
    ap.add_argument("--reuse", action="store_true", help="keep existing generated stores")
    ap.add_argument("--bin", action="append", default=[],
                    help="a dir with esm and report_bench to run instead of building (repeatable)")
    ap.add_argument("--formats", default="json,md,html,oscal")
    a = ap.parse_args()
    if a.bin:
        builds = [(pathlib.Path(b).name, pathlib.Path(b), pathlib.Path(b)) for b in a.bin]
    else:
        release, examples = build()
        builds = [("", release, examples)]
    base = pathlib.Path(a.dir)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    frm = (today - datetime.timedelta(days=a.days + 1)).isoformat()
    to = (today + datetime.timedelta(days=1)).isoformat()
    rows = []
    for store in a.stores.split(","):
        data, url = prepare(store, base, a, builds[0][1] / "esm", builds[0][2] / "report_bench")
        runs = [("baseline: sequential read, no checks",
                 lambda b: [str(b[2] / "report_bench"), "read", str(data)]
                 + ([url, a.pg_schema] if url else []))]
        if url:
            # The same read through a SELECT instead of COPY: what the COPY reader saves.
            runs.append(("sequential read with SELECT, not COPY",
                         lambda b: [str(b[2] / "report_bench"), "read-select", str(data), url, a.pg_schema]))
        runs.append(("esm audit verify", lambda b: [str(b[1] / "esm"), "audit", "verify",
                                                    "--dir", str(data)]))
        for fmt in a.formats.split(","):
            runs.append((f"esm report --format {fmt}",
                         lambda b, fmt=fmt: [str(b[1] / "esm"), "report", "--framework", "soc2",
                                             "--from", frm, "--to", to, "--format", fmt,
                                             "--out", str(base / store / f"report.{fmt}"),
                                             "--dir", str(data)]))
        # The store was just written (or the other store was): one untimed read first, so
        # the baseline is not the only run that pays for a cold page cache.
        code, *_ , out = timed(runs[0][1](builds[0]))
        assert code == 0, out
        # Every run once per build, the builds interleaved, so load drifts hit all alike.
        baselines = {}
        for name, args in runs:
            for b in builds:
                code, secs, cpu, rss, out = timed(args(b))
                assert code in (0, 1), out
                if name.startswith("baseline"):
                    baselines[b[0]] = secs
                label = f"{b[0]}: " if b[0] else ""
                rows.append((store, label + name, secs, cpu, rss, secs / baselines[b[0]],
                             a.events / secs, out.splitlines()[-1] if out else ""))
    print("\n| store | run | wall s | CPU s | peak RSS MiB | wall vs. baseline | events/s |")
    print("|---|---|---|---|---|---|---|")
    for store, name, secs, cpu, rss, ratio, eps, _ in rows:
        print(f"| {store} | {name} | {secs:.1f} | {cpu:.1f} | {rss:.0f} | {ratio:.2f} | {eps:,.0f} |")
    print()
    for store, name, *_, out in rows:
        print(f"{store} {name}: {out}")


if __name__ == "__main__":
    sys.exit(main())
