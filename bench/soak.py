#!/usr/bin/env python3
"""Soak: the quickstart pair (esm, a client-side and a server-side Envoy, mTLS with SDS
certificates, ext_authz on every request) under a fixed request rate for a long time,
watching esm's memory.

    bench/soak.py                      # 600 s at 100 requests/s after a 60 s warm-up
    bench/soak.py --duration 60        # a short one
    bench/soak.py --rate 200 --json out.json

The stack is deploy/quickstart/run's own (its start() and Stack, loaded as a module; free
ports, a fresh data dir under a temp dir, everything stopped at the end). esm is $ESM_BIN,
else target/release/esm, built when missing (as the quickstart does).

Load: wrk through the client Envoy, paced by bench/soak_pace.lua (wrk2 is not packaged):
every request is an allowed GET /hello/<n>, a new path each time, so each is a policy
evaluation and an audit record, not a decision-memo hit (--same-path for the memo path).
Latency is wrk's, measured from when a request was sent (a paced sender that falls behind
sends late; the slots it had to drop are reported).

Reported (text, and JSON with --json): esm's RSS at the start of the measured run (after the
warm-up), at its end and at most, how RSS moved over the run (least-squares slope, and
whether it grew by more than --rss-tolerance-mib), the requests made and the achieved rate,
failed requests (non-2xx/3xx answers, where every request should be allowed, and socket
errors and timeouts), p50/p99 latency, the load average, and the audit log (decisions
recorded, `esm audit verify`). Exit 0 when nothing failed and RSS did not grow, else 1."""

import argparse
import importlib.machinery
import importlib.util
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACE = ROOT / "bench" / "soak_pace.lua"


def quickstart():
    """deploy/quickstart/run as a module (it has no .py suffix)."""
    path = str(ROOT / "deploy" / "quickstart" / "run")
    loader = importlib.machinery.SourceFileLoader("quickstart", path)
    spec = importlib.util.spec_from_loader("quickstart", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class Sampler:
    """esm's RSS every `every` seconds, on a thread, with the time since it started."""

    def __init__(self, pid, every):
        self.pid, self.every, self.samples = pid, every, []
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic() - self.t0, rss_kib(self.pid)))
            except (OSError, RuntimeError):
                return
            self.stop.wait(self.every)

    def since(self, t):
        return [(s - t, kib) for s, kib in self.samples if s >= t]

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=10)


def wrk(port, rate, seconds, args):
    """One paced wrk run; its done() summary as a dict."""
    threads = min(args.threads, args.connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(args.connections), "-d", f"{seconds}s",
           "--timeout", "10s", "-s", str(PACE), f"http://127.0.0.1:{port}",
           "--", str(rate / threads), args.path] + (["same"] if args.same_path else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    m = re.search(r"^soak-wrk (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise SystemExit(f"soak: wrk failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    out = json.loads(m.group(1))
    out["failed"] = sum(out[k] for k in ("connect", "read", "write", "status", "timeout"))
    return out


def slope_mib_per_min(samples):
    """Least-squares slope of RSS over time, MiB per minute."""
    if len(samples) < 2:
        return 0.0
    ts, ys = [t for t, _ in samples], [k / 1024 for _, k in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return 0.0 if den == 0 else 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den


def audit_summary(binary, data):
    """`esm audit verify` over the whole log the soak wrote: its last line and how long."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
    t0 = time.monotonic()
    v = subprocess.run([str(binary), "audit", "verify", "--dir", str(data)], env=env,
                       capture_output=True, text=True, timeout=900)
    verify_s = time.monotonic() - t0
    return {"verify_ok": v.returncode == 0, "verify_s": round(verify_s, 1),
            "verify": (v.stdout + v.stderr).strip().splitlines()[-1:] or [""]}


def envoy_stats(admin):
    """The counters that say where a failed request failed: the server Envoy's ext_authz
    results and both Envoys' answers by status class, upstream resets and timeouts."""
    import urllib.request
    keep = ("ext_authz.", "downstream_rq_4xx", "downstream_rq_5xx", "upstream_rq_5xx",
            "upstream_rq_timeout", "upstream_cx_connect_fail", "upstream_rq_pending_failure",
            "upstream_reset", "ssl.connection_error", "ssl.fail_verify")
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?format=json", timeout=10) as r:
        stats = json.load(r)["stats"]
    return {s["name"]: s["value"] for s in stats
            if "value" in s and s["value"] and any(k in s["name"] for k in keep)}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=600, help="measured seconds (default 600)")
    # 30 s was too short at 100 requests/s: RSS still rose 47 -> 54 MiB over the next ten
    # minutes (decision memo, SQLite page caches filling); after 60 s it stayed flat.
    p.add_argument("--warmup", type=int, default=60, help="seconds of the same load first (60)")
    p.add_argument("--rate", type=float, default=100.0, help="requests per second (100)")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sample", type=float, default=5.0, help="RSS sample period, seconds (5)")
    p.add_argument("--rss-tolerance-mib", type=float, default=4.0,
                   help="end RSS above start by more than this counts as growth (4)")
    p.add_argument("--path", default="/hello", help="path prefix the quickstart grant allows")
    p.add_argument("--same-path", action="store_true", help="one path: decision-memo hits")
    p.add_argument("--json", metavar="FILE", help="also write the figures here")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("soak: wrk is missing (apt-get install wrk)")
    qs = quickstart()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # The upstream's write errors (a caller gone mid-answer: wrk closes its connections when
    # a run ends) are counted, not printed as tracebacks.
    upstream_errors = [0]

    def count_error(_server, _request, _address):
        upstream_errors[0] += 1

    qs.ThreadingServer.handle_error = count_error
    # The upstream answers HTTP/1.0, so the server Envoy opens a connection per request; with
    # socketserver's listen backlog of 5 a burst was refused (server Envoy: connect_fail,
    # 503) a few times in 30,000 requests: the stand-in's limit, not esm's.
    qs.ThreadingServer.request_queue_size = 128
    stack = qs.Stack()
    work = pathlib.Path(tempfile.mkdtemp(prefix="esm-soak-"))
    stack.cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
    data = work / "esm-data"
    try:
        p, binary = qs.start(stack, work, data, check=True)
        esm_pid = next(proc.pid for name, proc, _ in stack.procs if name == "esm")
        status, body = qs.get(p["CLIENT"], "GET", f"{args.path}/soak-probe")
        if status != 200:
            raise SystemExit(f"soak: the first request was {status}, not 200: {body}")
        load_start = os.getloadavg()
        sampler = Sampler(esm_pid, args.sample)
        print(f"soak: esm pid {esm_pid}, warm-up {args.warmup} s, then {args.duration} s at "
              f"{args.rate:g} requests/s ({args.connections} connections)", flush=True)
        if args.warmup:
            warm = wrk(p["CLIENT"], args.rate, args.warmup, args)
        measured_from = time.monotonic() - sampler.t0
        start_kib = rss_kib(esm_pid)
        run = wrk(p["CLIENT"], args.rate, args.duration, args)
        end_kib = rss_kib(esm_pid)
        sampler.finish()
        load_end = os.getloadavg()
        stats = {"server_envoy": envoy_stats(p["SERVER_ADMIN"]),
                 "client_envoy": envoy_stats(p["CLIENT_ADMIN"])}
        alive = all(proc.poll() is None for _, proc, _ in stack.procs)
        samples = sampler.since(measured_from)
        kibs = [k for _, k in samples] + [start_kib, end_kib]
        audit = audit_summary(binary, data)
    finally:
        stack.stop()

    grew_mib = (end_kib - start_kib) / 1024
    res = {
        "esm": str(binary), "duration_s": args.duration, "warmup_s": args.warmup,
        "rate_target": args.rate, "connections": args.connections,
        "path": args.path + ("" if args.same_path else "/<n>"),
        "requests": run["requests"],
        "rate_achieved": round(run["requests"] / (run["duration_us"] / 1e6), 1),
        "failed": run["failed"],
        "errors": {k: run[k] for k in ("connect", "read", "write", "status", "timeout")},
        "bad_status": run["bad_status"],
        "warmup_failed": warm["failed"] if args.warmup else 0,
        "warmup_bad_status": warm["bad_status"] if args.warmup else {},
        "envoy_stats": stats,
        "slots_dropped": run["slots_dropped"],
        "p50_ms": run["p50_us"] / 1000, "p90_ms": run["p90_us"] / 1000,
        "p99_ms": run["p99_us"] / 1000, "p999_ms": run["p999_us"] / 1000,
        "max_ms": run["max_us"] / 1000,
        "rss_start_mib": round(start_kib / 1024, 1), "rss_end_mib": round(end_kib / 1024, 1),
        "rss_max_mib": round(max(kibs) / 1024, 1), "rss_min_mib": round(min(kibs) / 1024, 1),
        "rss_growth_mib": round(grew_mib, 1),
        "rss_slope_mib_per_min": round(slope_mib_per_min(samples), 3),
        "rss_grew": grew_mib > args.rss_tolerance_mib,
        "rss_samples": len(samples), "rss_sample_s": args.sample,
        # The trajectory, to tell caches filling up from a leak: (seconds, MiB).
        "rss_series": [(round(t, 1), round(k / 1024, 1)) for t, k in samples],
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        "processes_alive_at_end": alive,
        "upstream_write_errors": upstream_errors[0],
        "audit": audit,
    }
    print(f"""soak: {res['requests']} requests in {args.duration} s, {res['rate_achieved']}/s \
(target {args.rate:g}/s; {res['slots_dropped']} paced slots dropped)
soak: failed {res['failed']} {res['errors']}, by status {res['bad_status']} (warm-up: {res['warmup_failed']}; \
upstream write errors, callers gone at a run's end: {upstream_errors[0]})
soak: latency p50 {res['p50_ms']:.2f} ms, p90 {res['p90_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, \
max {res['max_ms']:.1f} ms
soak: esm RSS start {res['rss_start_mib']} MiB (after warm-up), end {res['rss_end_mib']} MiB, \
max {res['rss_max_mib']} MiB, min {res['rss_min_mib']} MiB; growth {res['rss_growth_mib']} MiB, \
slope {res['rss_slope_mib_per_min']} MiB/min over {len(samples)} samples -> \
{'GREW' if res['rss_grew'] else 'no growth'} (tolerance {args.rss_tolerance_mib:g} MiB)
soak: load average {res['loadavg_start']} at start, {res['loadavg_end']} at end
soak: audit verify {'ok' if audit['verify_ok'] else 'FAILED'} in {audit['verify_s']} s: \
{audit['verify'][0]}""", flush=True)
    if res["failed"] or res["warmup_failed"]:
        print(f"soak: Envoy counters: {json.dumps(stats)}", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    ok = res["failed"] == 0 and not res["rss_grew"] and alive and audit["verify_ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
