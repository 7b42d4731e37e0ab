"""A peer of esm's agent socket, run by test_attestation_attacks.py as an unprivileged uid
under the system Python (standard library only). It speaks just enough HTTP/2 to make one
gRPC call (SDS FetchSecrets or Workload API FetchX509SVID) on a socket it already holds,
so that the process making the call need not be the one that connected.

Usage: agent_peer.py MODE SOCKET RPC [ALLOWED] [CYCLER], RPC one of sds, sds-default,
workload; prints one JSON line: what came
back on the call ("data": the DATA bytes, hex) and which pid connected ("connector").

Modes:
  honest      connect and call.
  child-asks  connect, fork; the child calls while the parent waits, unchanged.
  fork-exec   connect, fork; the parent execs ALLOWED, then the child calls.
  pid-reuse   connect, fork, exit; CYCLER forks until ALLOWED runs under the pid that
              connected, then the child calls.
  userns      (inside `unshare -Urm`) bind-mount this Python over ALLOWED, exec it under
              that path and call as `honest`.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
END_STREAM, ACK, END_HEADERS = 1, 1, 4
SDS = "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets"
# Each: the method, extra headers, the request message. "sds" names nothing (everything the
# caller may have, SVIDs named by SPIFFE ID); "sds-default" names the resource "default"
# (DiscoveryRequest field 3), which a caller without an entry is refused.
RPCS = {
    "sds": (SDS, [], b""),
    "sds-default": (SDS, [], b"\x1a\x07default"),
    "workload": ("/SpiffeWorkloadAPI/FetchX509SVID", [("workload.spiffe.io", "true")], b""),
}


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("agent closed the connection")
        buf += chunk
    return buf


def read_frame(s):
    head = read_exact(s, 9)
    size = int.from_bytes(head[:3], "big")
    return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, read_exact(s, size)


def literal(name, value):
    """An HPACK literal header field without indexing, new name, no Huffman coding."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def connect(path):
    """Connects and returns once the agent's SETTINGS arrived: esm has accepted the
    connection (and recorded its peer) by then."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(path)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0))
    while True:
        kind, flags, _, _ = read_frame(s)
        if kind == SETTINGS and not flags & ACK:
            s.sendall(frame(SETTINGS, ACK, 0))
            return s


def call(s, rpc):
    """One gRPC call on stream 1; the first whole response message, or how the call ended."""
    path, extra, message = RPCS[rpc]
    fields = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]
    block = b"".join(literal(k, v) for k, v in fields)
    s.sendall(frame(HEADERS, END_HEADERS, 1, block) + frame(DATA, END_STREAM, 1, b"\0" + struct.pack(">I", len(message)) + message))
    out = {"ended": False, "rst": None, "goaway": False, "error": None}
    data = b""
    try:
        while True:
            kind, flags, stream, payload = read_frame(s)
            if kind == PING and not flags & ACK:
                s.sendall(frame(PING, ACK, 0, payload))
            elif kind == SETTINGS and not flags & ACK:
                s.sendall(frame(SETTINGS, ACK, 0))
            elif kind == GOAWAY:
                out["goaway"] = True
                break
            elif stream == 1 and kind == RST_STREAM:
                out["rst"] = int.from_bytes(payload, "big")
                break
            elif stream == 1 and kind == DATA:
                data += payload
                # One whole message is enough: the Workload API stream stays open.
                if len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[1:5], "big"):
                    break
            if stream == 1 and kind in (HEADERS, DATA) and flags & END_STREAM:
                out["ended"] = True
                break
    except (EOFError, OSError) as e:
        out["error"] = repr(e)
    out["data"] = data.hex()
    return out


def same_file(a, b):
    try:
        x, y = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def wait_until(cond, what, limit=15):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def report(result, connector):
    result.update(pid=os.getpid(), connector=connector)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def main():
    mode, sock, rpc = sys.argv[1:4]
    allowed = sys.argv[4] if len(sys.argv) > 4 else None
    if mode == "honest":
        report(call(connect(sock), rpc), os.getpid())
    elif mode == "child-asks":
        s = connect(sock)
        r, w = os.pipe()
        if os.fork():
            os.close(w)
            os.read(r, 1)  # the parent, unchanged, waits until the child is done
            os._exit(0)
        report(call(s, rpc), os.getppid())
        os._exit(0)
    elif mode == "fork-exec":
        s = connect(sock)
        if os.fork():
            # The process that connected becomes the entitled program.
            os.execv(allowed, [allowed, "30"])
        parent = os.getppid()
        wait_until(lambda: same_file(f"/proc/{parent}/exe", allowed), "the parent's exec")
        result = call(s, rpc)
        os.kill(parent, signal.SIGKILL)
        report(result, parent)
        os._exit(0)
    elif mode == "pid-reuse":
        cycler = sys.argv[5]
        r, w = os.pipe()
        connector = os.fork()
        if connector == 0:
            s = connect(sock)
            if os.fork():
                os._exit(0)  # the process that connected is gone; its pid is free once reaped
            os.close(w)
            with os.fdopen(r) as f:
                old = int(f.readline())  # once the entitled program runs under that pid
            result = call(s, rpc)
            os.kill(old, signal.SIGKILL)
            report(result, old)
            os._exit(0)
        os.close(r)
        os.waitpid(connector, 0)
        # CYCLER forks until one child has the old pid; that one execs ALLOWED.
        subprocess.run([cycler, str(connector), allowed], check=True, timeout=120)
        wait_until(lambda: same_file(f"/proc/{connector}/exe", allowed), "the pid's reuse")
        os.write(w, f"{connector}\n".encode())
        os.close(w)
    elif mode == "userns":
        subprocess.run(["mount", "--bind", os.path.realpath(sys.executable), allowed], check=True)
        os.execv(allowed, [allowed, os.path.abspath(__file__), "honest", sock, rpc])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
