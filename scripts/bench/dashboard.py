#!/usr/bin/env python3
"""scripts/bench/dashboard.py — how fast `slipway server` serves its dashboard's pages with
1,000 pipelines in the store and a 100,000-line job log: each page's HTML fetched again and
again on one keep-alive connection (median and p95 ms), its size with the stylesheet and
script, against the issue's goals (< 50 ms, < 150 KB) and, where the API has the same data,
the API's JSON for it (both sides in one run, the ratio printed). Release build:
`cargo build --release -p slipway`.

    scripts/bench/dashboard.py --pipelines 1000 --requests 30
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
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.connect()
    return c


def call(c, path, token, method="GET", body=None):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    return r.status, r.read()


def wait_done(port, token, run, timeout=300):
    c = conn(port)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, body = call(c, f"/api/v1/pipelines/{run}", token)
        v = json.loads(body)
        if v["status"] != "running":
            c.close()
            return v
        time.sleep(0.2)
    raise SystemExit(f"pipeline {run} did not end in {timeout} s")


def measure(port, token, path, n):
    c = conn(port)
    status, body = call(c, path, token)
    assert status == 200, (path, status, body[:300])
    times = []
    for _ in range(n):
        t = time.perf_counter()
        status, body = call(c, path, token)
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200, (path, status)
    c.close()
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], len(body), body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pipelines", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="slipway-bench-dashboard-")
    server = None
    try:
        many = git_repo(os.path.join(work, "many"), {".slipway.yml": "wait:\n  when: manual\n  script: [echo later]\n"})
        big = git_repo(os.path.join(work, "big"), {".slipway.yml": "long:\n  script: ['seq 1 100000 | sed \"s/^/line /\"']\n"})
        port = free_port()
        server, admin = start_server(args.slipway, os.path.join(work, "data"), port, "--with-agent")
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
        c = conn(port)
        for name, repo in (("many", many), ("big", big)):
            status, body = call(c, "/api/v1/projects", admin, "POST", json.dumps({"name": name, "repo": repo}))
            assert status == 201, (status, body)
        status, body = call(c, "/api/v1/projects/big/pipelines", admin, "POST", "{}")
        assert status in (200, 201), (status, body)
        big_run = json.loads(body)["id"]
        c.close()
        # 1,000 pipelines, four at a time (each is planned from its commit like any other).
        t0 = time.perf_counter()
        ids = []
        lock = threading.Lock()

        def trigger(n):
            c = conn(port)
            for _ in range(n):
                status, body = call(c, "/api/v1/projects/many/pipelines", admin, "POST", "{}")
                assert status in (200, 201), (status, body)
                with lock:
                    ids.append(json.loads(body)["id"])
            c.close()

        threads = [threading.Thread(target=trigger, args=(args.pipelines // 4,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        v = wait_done(port, admin, big_run)
        assert v["status"] == "success", v
        for run in (max(ids),):
            wait_done(port, admin, run)
        print(f"{len(ids) + 1} pipelines recorded in {time.perf_counter() - t0:.1f} s; "
              f"a 100,000-line log in pipeline {big_run}")
        last = max(ids)
        c = conn(port)
        status, page = call(c, "/ui/", admin)
        css = page.decode().split('rel="stylesheet" href="')[1].split('"')[0]
        js = page.decode().split('<script src="')[1].split('"')[0]
        assets = sum(len(call(c, p, admin)[1]) for p in (css, js))
        c.close()
        pages = [
            ("overview", "/ui/", None),
            ("pipelines (all)", "/ui/pipelines", "/api/v1/pipelines"),
            ("pipelines (one project)", "/ui/pipelines?project=many", None),
            ("pipeline", f"/ui/pipelines/{last}", f"/api/v1/pipelines/{last}"),
            ("job log, last page of 100,000 lines", f"/ui/pipelines/{big_run}/jobs/0", f"/api/v1/pipelines/{big_run}/jobs/0/log"),
            ("job log, a full page (1,000 lines)", f"/ui/pipelines/{big_run}/jobs/0?page=50", None),
            ("job log, search 100,000 lines", f"/ui/pipelines/{big_run}/jobs/0?q=line+77777", None),
            ("test report", f"/ui/pipelines/{last}/tests", None),
            ("environments", "/ui/environments", None),
            ("alerts", "/ui/alerts", None),
            ("admin: projects", "/ui/admin/projects", None),
            ("admin: agents", "/ui/admin/agents", None),
            ("admin: tokens", "/ui/admin/tokens", None),
            ("admin: audit log", "/ui/admin/audit", None),
        ]
        print(f"assets (stylesheet + script, cached for good after the first page): {assets} bytes")
        print(f"{'page':40} {'p50 ms':>7} {'p95 ms':>7} {'KB+assets':>9} {'API p50':>8} {'ratio':>6}  goal")
        worst_ms, worst_kb = 0.0, 0.0
        for name, path, api in pages:
            p50, p95, size, _ = measure(port, admin, path, args.requests)
            kb = (size + assets) / 1024
            worst_ms, worst_kb = max(worst_ms, p50), max(worst_kb, kb)
            api_col, ratio = "", ""
            if api:
                a50, _, _, _ = measure(port, admin, api, args.requests)
                api_col, ratio = f"{a50:8.2f}", f"{p50 / a50:6.2f}"
            ok = "ok" if p50 < 50 and kb < 150 else "MISSED"
            print(f"{name:40} {p50:7.2f} {p95:7.2f} {kb:9.1f} {api_col:>8} {ratio:>6}  {ok}")
        print(f"slowest page p50 {worst_ms:.2f} ms (goal < 50), largest {worst_kb:.1f} KB with assets (goal < 150)")
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
