"""Envoy-through ext_authz benchmark: the same Envoy (1.40, --concurrency 1, a listener
answering with direct_response) and the same wrk load, configurations interleaved in one run:

  no-op     ext_authz -> a server that answers OK and does nothing else (the baseline,
            authz/examples/noop_authz.rs)
  esm       ext_authz -> esm serve, default zero-trust policy, every decision audited to
            SQLite (decision_log_mode = "async")

each under two loads: the same path on every request (esm's decision memo answers: "memo
hit") and a new path on every request (bench/new_path.lua: every request is a first-seen
decision, evaluated on regorus' bytecode VM), and each with the client talking TLS to Envoy
or plain HTTP. Also, as a floor, Envoy without ext_authz. BENCH_EXTRA=1 adds esm with
decision_log = "off" under both loads in plain HTTP (what auditing costs) and
decision_log_mode = "sync" (each Check answered only once its record is committed), the
latter twice: with the store on the benchmark's disk and on /dev/shm (tmpfs, where an fsync
costs nothing), and prints the disk's fsync latency measured in the same run, so the part of
sync mode's cost that is the disk's own shows apart from esm's; the default async mode
with its store on tmpfs, so what writing the evidence to this machine's disk costs shows apart
from what esm does to make it; and the audit writer thread at nice 19 and under SCHED_IDLE
(chrt), to see how much of the audited p99 is the writer taking a core beside Envoy.

The caller's SPIFFE ID reaches the policy in x-forwarded-client-cert ([authz] xfcc), the
destination's from Envoy's own esm-issued certificate; the policy grants the request, so
every request is a decision that allows. Prints a Markdown table (requests/s, latency p50
and p99, the ext_authz server's and Envoy's CPU per request) and esm's ratios to the no-op
server. Every ratio is taken round by round, each esm configuration against the no-op under
the same load and client measured just before it (seconds apart), and its median printed
(throughput's with its range): on a shared VM the drift between rounds is larger than the
differences measured, so medians taken per configuration would compare different moments.

Run: bench/ext_authz.sh (builds release binaries, installs wrk and Envoy if missing).
BENCH_DURATION (10s), BENCH_CONNECTIONS (16), BENCH_ROUNDS (5), BENCH_ONLY (parts of the
labels to keep, separated by semicolons: "plain HTTP" or "esm, memo hit, TLS;no-op, memo hit,
TLS"), BENCH_EXTRA."""

import json
import os
from statistics import median
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "compliance"))
from envoy_harness import envoy_bin, free_port, stop_process, wait_port  # noqa: E402

ESM = ROOT / "target" / "release" / "esm"
NOOP = ROOT / "target" / "release" / "examples" / "noop_authz"
TD = "example.org"
API = f"spiffe://{TD}/ns/prod/sa/api"
WEB = f"spiffe://{TD}/ns/prod/sa/web"
DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "16")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def envoy_config(admin, port, authz_port, cert, tls=True):
    filters = []
    if authz_port:
        filters.append({"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3", "failure_mode_allow": False,
            "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "2s"}}})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench", "forward_client_cert_details": "ALWAYS_FORWARD_ONLY",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
        "http_filters": filters}}
    tls_socket = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": str(cert / "svid.pem")},
                                                     "private_key": {"filename": str(cert / "svid.key")}}]}}}
    clusters = []
    if authz_port:
        clusters.append({"name": "authz", "type": "STATIC", "connect_timeout": "1s",
                         "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                             "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                             "explicit_http_config": {"http2_protocol_options": {}}}},
                         "load_assignment": {"cluster_name": "authz", "endpoints": [{"lb_endpoints": [{"endpoint": {
                             "address": {"socket_address": {"address": "127.0.0.1", "port_value": authz_port}}}}]}]}})
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {"clusters": clusters, "listeners": [{
                "name": "bench", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [hcm], **({"transport_socket": tls_socket} if tls else {})}]}]}}


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": pct(50), "p99": pct(99), "non2xx": int(non2xx.group(1)) if non2xx else 0}


def cpu_seconds(pid):
    """User + system CPU time of a process so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fsync_latency(directory, writes=400):
    """What one small append + fsync costs on the disk under `directory`: the floor of a
    sync-mode commit, which answers nothing before its group is on disk."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    took = []
    try:
        for _ in range(writes):
            os.write(fd, b"x" * 4096)
            start = time.perf_counter()
            os.fsync(fd)
            took.append((time.perf_counter() - start) * 1e3)
    finally:
        os.close(fd)
        path.unlink()
    took.sort()
    return (f"fsync of a 4 KiB append on the store's disk, {writes} times: mean {sum(took) / writes:.3f} ms, "
            f"p50 {took[writes // 2]:.3f} ms, p90 {took[writes * 9 // 10]:.3f} ms, p99 {took[writes * 99 // 100]:.3f} ms")


NEW_PATH_LUA = ROOT / "bench" / "new_path.lua"


def measure(tmp, name, authz_port, cert, server_pid, new_paths=False, tls=True):
    admin, port = free_port(), free_port()
    cfg = tmp / f"envoy-{name}.json"
    cfg.write_text(json.dumps(envoy_config(admin, port, authz_port, cert, tls)))
    log = open(tmp / f"envoy-{name}.log", "w")
    envoy = subprocess.Popen([str(envoy_bin()), "-c", str(cfg), "--concurrency", "1", "--base-id", str(admin),
                              "--log-level", "error"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/items/7"
        xfcc = f"x-forwarded-client-cert: By={API};URI={WEB}"
        subprocess.run(["wrk", "-t1", "-c4", "-d2s", "-H", xfcc, url], capture_output=True, timeout=60)  # warm up
        script = ["-s", str(NEW_PATH_LUA)] if new_paths else []
        cpu, envoy_cpu = cpu_seconds(server_pid), cpu_seconds(envoy.pid)
        out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}", "--latency", "-H", xfcc,
                              *script, url], capture_output=True, text=True, timeout=300).stdout
        cpu, envoy_cpu = cpu_seconds(server_pid) - cpu, cpu_seconds(envoy.pid) - envoy_cpu
        r = parse_wrk(out)
        total = int(re.search(r"(\d+) requests in", out).group(1))
        # The ext_authz server's own CPU per request: what it takes from Envoy and wrk.
        r["cpu_us"] = cpu * 1e6 / total if server_pid else 0.0
        # Envoy's own: with one worker it is the bottleneck, so whatever makes it work harder
        # per request (or takes its core) shows here.
        r["envoy_us"] = envoy_cpu * 1e6 / total
        return r
    finally:
        stop_process(envoy)
        log.close()


def writer_sched_idle(pid):
    """Puts esm's audit writer thread (named esm-audit) under SCHED_IDLE; whether it found it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tasks = [t for t in pathlib.Path(f"/proc/{pid}/task").iterdir()
                 if (t / "comm").read_text().strip() == "esm-audit"]
        if tasks:
            for t in tasks:
                subprocess.run(["chrt", "--idle", "-p", "0", t.name], check=True, capture_output=True)
            return True
        time.sleep(0.1)
    return False


def fixed_destination(data):
    """A plain-HTTP listener has no certificate, so Envoy's CheckRequest names no destination and
    the default policy would deny everything. This esm serves the same policy with the destination
    fixed to the identity the TLS listener's certificate gives (its Rego tests, written for any
    destination, are left out)."""
    policies = data / "policies"
    rego = policies / "zero_trust.rego"
    rego.write_text(rego.read_text().replace("input.destination.spiffe_id", f'"{API}"'))
    (policies / "zero_trust_test.rego").unlink()


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="esm-bench-"))
    cleanup = [tmp]
    procs = []
    try:
        data = tmp / "d"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
        subprocess.run([str(ESM), "init", "--trust-domain", TD, "--dir", str(data)], env=env, check=True,
                       capture_output=True)
        subprocess.run([str(ESM), "cert", "issue", "--spiffe-id", API, "--ttl", "1h", "--out", str(tmp / "api"),
                        "--dir", str(data)], env=env, check=True, capture_output=True)
        esm_port, admin, noop_port = free_port(), free_port(), free_port()
        env.update({"ESM_AUTHZ_LISTEN": f"127.0.0.1:{esm_port}", "ESM_ADMIN_LISTEN": f"127.0.0.1:{admin}",
                    "ESM_AUTHZ_XFCC": "true", "ESM_LOG": "warn", "ESM_AGENT_SOCKET": ""})
        procs.append(subprocess.Popen([str(ESM), "serve", "--dir", str(data)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=open(tmp / "esm.log", "w")))
        def variant(name, change=None, under=None, **overrides):
            """Another esm on a copy of the data dir (changed by `change`, under `under` or the
            run's own directory), with other settings; its port."""
            copy, port = (under or tmp) / name, free_port()
            shutil.copytree(data, copy, ignore=shutil.ignore_patterns("*.sock"))
            if change:
                change(copy)
            venv = dict(env, ESM_AUTHZ_LISTEN=f"127.0.0.1:{port}",
                        ESM_ADMIN_LISTEN=f"127.0.0.1:{free_port()}", **overrides)
            procs.append(subprocess.Popen([str(ESM), "serve", "--dir", str(copy)], env=venv,
                                          stdout=subprocess.DEVNULL, stderr=open(tmp / f"esm-{name}.log", "w")))
            wait_port(port)
            return port

        noop = subprocess.Popen([str(NOOP), f"127.0.0.1:{noop_port}"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        procs.append(noop)
        wait_port(esm_port)
        wait_port(noop_port)
        esm = {True: (esm_port, procs[0].pid)}
        plain_port = variant("plain", change=fixed_destination)
        esm[False] = (plain_port, procs[-1].pid)
        # label -> (Envoy's ext_authz port, server pid, new path per request, TLS to Envoy)
        configs = {}
        for tls in (True, False):
            client = "TLS" if tls else "plain HTTP"
            configs[f"Envoy alone, {client}"] = (None, None, False, tls)
            for load, new_paths in (("memo hit", False), ("first-seen", True)):
                configs[f"no-op, {load}, {client}"] = (noop_port, noop.pid, new_paths, tls)
                configs[f"esm, {load}, {client}"] = (*esm[tls], new_paths, tls)
        if os.environ.get("BENCH_EXTRA"):
            # One recording no decisions (what the audit store costs), one answering each Check
            # only once its record is committed.
            quiet_port = variant("quiet", change=fixed_destination, ESM_AUTHZ_DECISION_LOG="off")
            quiet_pid = procs[-1].pid
            for load, new_paths in (("memo hit", False), ("first-seen", True)):
                configs[f"esm, decisions not audited, {load}, plain HTTP"] = (quiet_port, quiet_pid, new_paths, False)
            # The audit writer at the lowest nice value, and under SCHED_IDLE (set with
            # chrt from outside: esm has no such setting): whether its batches, taking a core
            # beside Envoy's, are what moves p99.
            nice_port = variant("nice19", change=fixed_destination, ESM_AUDIT_WRITER_NICE="19")
            configs["esm, audit.writer_nice = 19, memo hit, plain HTTP"] = (nice_port, procs[-1].pid, False, False)
            idle_port = variant("idle", change=fixed_destination)
            if shutil.which("chrt") and writer_sched_idle(procs[-1].pid):
                configs["esm, writer SCHED_IDLE, memo hit, plain HTTP"] = (idle_port, procs[-1].pid, False, False)
            sync_port = variant("sync", ESM_AUTHZ_DECISION_LOG_MODE="sync")
            configs["esm, decision_log_mode = sync, memo hit, TLS"] = (sync_port, procs[-1].pid, False, True)
            shm = pathlib.Path(tempfile.mkdtemp(prefix="esm-bench-", dir="/dev/shm"))
            cleanup.append(shm)
            ram_port = variant("sync-ram", under=shm, ESM_AUTHZ_DECISION_LOG_MODE="sync")
            configs["esm, decision_log_mode = sync, store on tmpfs, memo hit, TLS"] = (
                ram_port, procs[-1].pid, False, True)
            # The default async mode with its store on tmpfs: what writing the evidence to this
            # machine's disk costs, apart from what esm does to make it.
            async_ram_port = variant("async-ram", under=shm)
            configs["esm, store on tmpfs, memo hit, TLS"] = (async_ram_port, procs[-1].pid, False, True)
        # BENCH_ONLY="esm, first-seen;no-op, first-seen" keeps the configurations whose label
        # holds one of those (labels have commas: entries are separated by semicolons).
        only = [w.strip().lower() for w in os.environ.get("BENCH_ONLY", "").split(";") if w.strip()]
        if only:
            configs = {k: v for k, v in configs.items() if any(w in k.lower() for w in only)}
        def base_of(name):
            """The no-op configuration an esm one is compared with: same load, same client."""
            return "no-op, " + ", ".join(name.split(", ")[-2:])
        # Each esm configuration is measured right after its own no-op, so a pair is seconds
        # apart whatever else the round holds.
        order = []
        for name in configs:
            if not name.startswith("esm, "):
                order += [name] + [m for m in configs if m.startswith("esm, ") and base_of(m) == name]
        order += [m for m in configs if m not in order]
        runs = {name: [] for name in order}
        # Interleaved rounds, so drift on a shared machine hits every configuration alike.
        for _ in range(ROUNDS):
            for i, name in enumerate(order):
                port, pid, new_paths, tls = configs[name]
                runs[name].append(measure(tmp, str(i), port, tmp / "api", pid, new_paths, tls))
        print(f"wrk -t1 -c{CONNECTIONS} -d{DURATION}, Envoy --concurrency 1, medians of {ROUNDS} interleaved rounds\n")
        print("| configuration | requests/s | p50 ms | p99 ms | server CPU µs/request | Envoy CPU µs/request | non-2xx |")
        print("|---|---|---|---|---|---|---|")
        for name, rs in runs.items():
            # Each figure is its own median over the rounds: one slow round moves none of them.
            pick = {k: median(r[k] for r in rs) for k in ("rps", "p50", "p99", "cpu_us", "envoy_us")}
            print(f"| {name} | {pick['rps']:.0f} | {pick['p50']:.3f} | {pick['p99']:.3f} | "
                  f"{pick['cpu_us']:.1f} | {pick['envoy_us']:.1f} | {sum(r['non2xx'] for r in rs)} |")
        print("\n| esm / no-op, per-round ratios | throughput (median, range) | p50 | p99 | server CPU | Envoy CPU |")
        print("|---|---|---|---|---|---|")
        for name in runs:
            base = base_of(name)
            if not name.startswith("esm, ") or base not in runs:
                continue

            def paired(key):
                """Each round's esm figure over the no-op's of the same round (measured just
                before it): the machine's drift between rounds is larger than the differences
                measured. Sorted; rounds where the no-op's figure is 0 are left out."""
                return sorted(x[key] / y[key] for x, y in zip(runs[name], runs[base]) if y[key])

            rps = paired("rps")
            cols = [f"{median(r):.3f}x" if r else "-" for r in map(paired, ("p50", "p99", "cpu_us", "envoy_us"))]
            print(f"| {name[5:]} | {median(rps):.3f} ({rps[0]:.2f}–{rps[-1]:.2f}) | " + " | ".join(cols) + " |")
        audited = subprocess.run([str(ESM), "audit", "verify", "--dir", str(data)], capture_output=True,
                                 text=True, env={k: v for k, v in os.environ.items() if not k.startswith("ESM_")})
        print(f"audit verify after the run: exit {audited.returncode}")
        if os.environ.get("BENCH_EXTRA"):
            print(fsync_latency(tmp))
    finally:
        for p in procs:
            stop_process(p)
        for d in cleanup:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
