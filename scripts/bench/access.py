#!/usr/bin/env python3
"""scripts/bench/access.py — what access control costs a request to `slipway server`: the
same keep-alive client calls a public route (`/readyz`: no token, one store query) and
routes behind the permission middleware (`/api/v1/roles`: token lookup and bindings, then an
in-memory handler; `/api/v1/projects` as an admin and as a viewer bound on one project, which
filters the listing), sequentially (latency p50/p99) and from 8 threads (requests/s). Both
sides in one run, medians and the ratio printed. Release build: `cargo build --release -p slipway`.

    scripts/bench/access.py --requests 2000
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_SLIPWAY, free_port, git_repo, start_server  # noqa: E402


def conn(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.connect()
    return c


def call(c, path, token=None, method="GET", body=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    return r.status, data


def latencies(port, path, token, n):
    c = conn(port)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        status, _ = call(c, path, token)
        out.append((time.perf_counter() - t) * 1000)
        assert status == 200, (path, status)
    c.close()
    return out


def throughput(port, path, token, n, threads=8):
    done = []

    def worker():
        c = conn(port)
        for _ in range(n // threads):
            status, _ = call(c, path, token)
            assert status == 200
        c.close()
        done.append(1)

    t = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    return (n // threads) * threads / (time.perf_counter() - t)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="slipway-bench-access-")
    server = None
    try:
        repo = git_repo(os.path.join(work, "repo"), {".slipway.yml": "build:\n  script: [echo hi]\n"})
        port = free_port()
        server, admin = start_server(args.slipway, os.path.join(work, "data"), port)
        c = conn(port)
        for i in range(20):
            status, _ = call(c, "/api/v1/projects", admin, "POST", json.dumps({"name": f"p{i}", "repo": repo}))
            assert status == 201, status
        user = {"name": "vera", "password": "a long enough passphrase", "bindings": [{"role": "viewer", "project": "p7"}]}
        assert call(c, "/api/v1/users", admin, "POST", json.dumps(user))[0] == 201
        status, body = call(c, "/api/v1/login", None, "POST", json.dumps({"user": "vera", "password": user["password"]}))
        viewer = json.loads(body)["token"]
        c.close()
        sides = [
            ("public /readyz (no token)", "/readyz", None),
            ("/api/v1/roles (token + bindings)", "/api/v1/roles", admin),
            ("/api/v1/projects as admin (20)", "/api/v1/projects", admin),
            ("/api/v1/projects as a viewer of one", "/api/v1/projects", viewer),
        ]
        for _, path, token in sides:
            latencies(port, path, token, 100)  # warm
        print(f"{'route':40} {'p50 ms':>8} {'p99 ms':>8} {'req/s (8 threads)':>18}")
        results = {}
        for name, path, token in sides:
            lat = latencies(port, path, token, args.requests)
            rps = throughput(port, path, token, args.requests)
            results[name] = (statistics.median(lat), pct(lat, 0.99), rps)
            print(f"{name:40} {statistics.median(lat):8.3f} {pct(lat, 0.99):8.3f} {rps:18.0f}")
        base = results[sides[0][0]]
        auth = results[sides[1][0]]
        print(f"access control per request: +{auth[0] - base[0]:.3f} ms at p50 "
              f"(ratio {auth[0] / base[0]:.2f}x), {auth[2] / base[2]:.2f}x the public route's requests/s")
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
