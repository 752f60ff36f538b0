#!/usr/bin/env python3
"""scripts/bench/server.py — `slipway server` with agents on this machine: how long from a
signed GitHub push webhook to the job's shell running on an idle agent (p50/p99), how long a
ready job waits for an agent (pickup, from the store's own times), and a burst of webhooks:
every one becomes exactly one pipeline (none lost, none twice, replays start nothing), and
the jobs a minute one server sustains with 4 agents. Release build:
`cargo build --release -p slipway`.

    scripts/bench/server.py --runs 50 --burst 1000
    scripts/bench/server.py --database-url postgres://USER@HOST/DB   # the same on PostgreSQL
"""

import argparse
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_SLIPWAY, free_port  # noqa: E402


def call(url, token, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.read()


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    ap.add_argument("--burst", type=int, default=1000, help="webhooks sent at once (each its own branch and commit)")
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="slipway-bench-server-")
    procs = []
    try:
        repo = os.path.join(work, "repo")
        os.makedirs(repo)
        git(repo, "init", "-q", "-b", "main")
        git(repo, "config", "user.email", "b@x")
        git(repo, "config", "user.name", "b")
        stamp = os.path.join(work, "started")
        with open(os.path.join(repo, ".gitlab-ci.yml"), "w") as f:
            f.write(f'job:\n  script:\n    - date +%s.%N >> {stamp}\n')
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "one")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [args.slipway, "server", "--listen", f"127.0.0.1:{port}"]
            + (["--database-url", args.database_url] if args.database_url else []),
            env=dict(os.environ, SLIPWAY_DATA_DIR=os.path.join(work, "server"), NO_COLOR="1"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(server)
        token = None
        for line in server.stdout:
            if line.startswith("admin token"):
                token = line.rsplit(" ", 1)[1].strip()
            if line.startswith("slipway server listening"):
                break
        agents = []
        for i in range(4):
            a = subprocess.Popen(
                [args.slipway, "agent", "--server", url, "--token", token, "--name", f"b{i}", "--concurrency", "1"],
                env=dict(os.environ, SLIPWAY_DATA_DIR=os.path.join(work, f"agent{i}"), NO_COLOR="1"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(a)
            agents.append(a)
        secret = "bench-secret"
        call(f"{url}/api/v1/projects", token, "POST",
             json.dumps({"name": "app", "repo": repo, "webhook_secret": secret}).encode(),
             {"content-type": "application/json"})
        time.sleep(1.0)

        def rss_of(p):
            with open(f"/proc/{p.pid}/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

        print(f"RSS idle: server {rss_of(server):.1f} MiB, agents "
              + ", ".join(f"{rss_of(a):.1f}" for a in agents) + " MiB")

        # An agent's API reached through its tunnel (the server's `agents/<name>.sock`, what
        # the deploy engine uses for `agent: {name: …}`) and on its own socket, one connection
        # per call as the engine makes them.
        import http.client
        import socket as so

        class Unix(http.client.HTTPConnection):
            def __init__(self, path):
                super().__init__("agent")
                self.path_ = path

            def connect(self):
                self.sock = so.socket(so.AF_UNIX, so.SOCK_STREAM)
                self.sock.connect(self.path_)

        def agent_call_ms(path, n=300):
            ts = []
            for _ in range(n):
                t = time.perf_counter()
                c = Unix(path)
                c.request("GET", "/v1/agent")
                r = c.getresponse()
                r.read()
                c.close()
                assert r.status == 200, r.status
                ts.append((time.perf_counter() - t) * 1000)
            ts.sort()
            return statistics.median(ts), ts[int(len(ts) * 0.99)]

        tunnel = os.path.join(work, "server", "agents", "b0.sock")
        for _ in range(100):
            if os.path.exists(tunnel):
                break
            time.sleep(0.05)
        own = agent_call_ms(os.path.join(work, "agent0", "agent.sock"))
        via = agent_call_ms(tunnel)
        print(f"agent API call (GET /v1/agent, a connection each): own socket p50 {own[0]:.2f} ms, p99 {own[1]:.2f} ms; "
              f"through the tunnel p50 {via[0]:.2f} ms, p99 {via[1]:.2f} ms (x{via[0] / own[0]:.1f})")

        def push(i):
            with open(os.path.join(repo, "n"), "w") as f:
                f.write(str(i))
            git(repo, "add", "-A")
            git(repo, "commit", "-qm", f"c{i}")
            sha = git(repo, "rev-parse", "HEAD")
            body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
            sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            return body, {"content-type": "application/json", "X-GitHub-Event": "push",
                          "X-GitHub-Delivery": f"d{i}-{time.time()}", "X-Hub-Signature-256": sig}

        def started_count():
            try:
                with open(stamp) as f:
                    return [float(x) for x in f.read().split()]
            except FileNotFoundError:
                return []

        # Latency: one push at a time, agents idle.
        lat = []
        marks = []  # (webhook sent, shell running), seconds
        for i in range(args.runs):
            body, headers = push(i)
            before = len(started_count())
            t0 = time.time()
            call(f"{url}/api/v1/webhooks/github/app", None, "POST", body, headers)
            while len(started_count()) == before:
                time.sleep(0.001)
            lat.append((started_count()[-1] - t0) * 1000)
            marks.append((t0, started_count()[-1]))
            time.sleep(0.05)
        lat.sort()
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"webhook -> job's shell running on an idle agent: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
              f"(min {lat[0]:.1f}, max {lat[-1]:.1f}; {len(lat)} pushes)")

        # Where the time goes, per push, and how long each ready job waited for an agent (pickup):
        # the store's own times (SQLite in the data directory, or PostgreSQL through psql).
        query = ("SELECT r.created_at, j.queued_at, j.started_at FROM runs r JOIN jobs j ON j.run_id = r.id "
                 "WHERE r.ref_name = 'main' ORDER BY r.id")
        waits_query = "SELECT started_at - queued_at FROM jobs WHERE started_at IS NOT NULL AND queued_at IS NOT NULL"
        db = os.path.join(work, "server", "slipway.db")
        if args.database_url and shutil.which("psql"):
            def select(q):
                out = subprocess.run(["psql", args.database_url, "-At", "-F", " ", "-c", q],
                                     capture_output=True, text=True).stdout
                return [tuple(float(x) for x in line.split()) for line in out.splitlines() if line.strip()]
        elif os.path.exists(db):
            import sqlite3
            con = sqlite3.connect(db)
            select = lambda q: con.execute(q).fetchall()
        else:
            select = None
        if select:
            rows = select(query)[-len(marks):]
            if len(rows) == len(marks):
                parts = {"webhook -> recorded": [], "recorded -> job queued (fetch, plan)": [],
                         "queued -> claimed": [], "claimed -> shell (agent: checkout, plan, workspace)": []}
                for (t0, shell), (created, queued, claimed) in zip(marks, rows):
                    vals = [created - t0 * 1000, queued - created, claimed - queued, shell * 1000 - claimed]
                    for k, v in zip(parts, vals):
                        parts[k].append(v)
                print("  where it goes (p50 / p99 ms): " + "; ".join(
                    f"{k} {statistics.median(v):.1f} / {sorted(v)[min(len(v) - 1, int(len(v) * 0.99))]:.1f}"
                    for k, v in parts.items()))
            waits = sorted(r[0] for r in select(waits_query))
            if waits:
                print(f"pickup (job ready -> claimed by an idle agent): p50 {statistics.median(waits):.1f} ms, "
                      f"p99 {waits[min(len(waits) - 1, int(len(waits) * 0.99))]:.1f} ms ({len(waits)} jobs)")

        # A burst: N webhooks at once, each a push of its own branch and commit (made in one
        # git fast-import), 16 senders; then the same deliveries again (replays).
        n = args.burst
        stream = []
        for i in range(n):
            stream.append(f"commit refs/heads/burst{i}\ncommitter b <b@x> {1700000000 + i} +0000\n"
                          f"data 2\nb\nfrom refs/heads/main\nM 644 inline burst\ndata {len(str(i))}\n{i}\n")
        subprocess.run(["git", "-C", repo, "fast-import", "--quiet"], input="".join(stream), text=True, check=True)
        shas = dict(line.split() [::-1] for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)",
                                                             "refs/heads/burst*").splitlines())
        deliveries = []
        for i in range(n):
            body = json.dumps({"ref": f"refs/heads/burst{i}", "after": shas[f"refs/heads/burst{i}"]}).encode()
            sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            deliveries.append((body, {"content-type": "application/json", "X-GitHub-Event": "push",
                                      "X-GitHub-Delivery": f"burst-{i}", "X-Hub-Signature-256": sig}))
        from concurrent.futures import ThreadPoolExecutor
        send = lambda d: call(f"{url}/api/v1/webhooks/github/app", None, "POST", d[0], d[1])[0]
        before = len(started_count())
        t0 = time.time()
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(send, deliveries))
        accepted = time.time() - t0
        with ThreadPoolExecutor(16) as pool:
            replays = list(pool.map(send, deliveries[: min(n, 100)]))
        while len(started_count()) - before < n:
            time.sleep(0.05)
            if time.time() - t0 > 600:
                break
        took = time.time() - t0
        _, listing = call(f"{url}/api/v1/pipelines?project=app&limit=1000000", token)
        refs = [p["ref"] for p in json.loads(listing) if p["ref"].startswith("burst")]
        started = len(started_count()) - before
        print(f"burst: {n} webhooks accepted in {accepted:.1f} s ({n / accepted:.0f}/s; answers {sorted(set(codes))}), "
              f"{len(refs)} pipelines ({len(set(refs))} distinct refs), {started} jobs started; "
              f"{len(replays)} replays started nothing: {len(refs) == n}")
        print(f"throughput: all {started} jobs started within {took:.1f} s of the first webhook with 4 agents: "
              f"{started / took * 60:.0f} jobs/minute")
        rss = {}
        for name, p in [("server", server)] + [(f"agent{i}", a) for i, a in enumerate(agents)]:
            with open(f"/proc/{p.pid}/status") as f:
                rss[name] = next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
        print("RSS after the run: " + ", ".join(f"{k} {v:.1f} MiB" for k, v in rss.items()))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
