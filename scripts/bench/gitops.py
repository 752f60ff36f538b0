#!/usr/bin/env python3
"""scripts/bench/gitops.py — from a commit in a config repository to the environment synced and
healthy on the local agent: with the repository's signed webhook (the commit is announced at
once), and without one (the server's own polling at its default `--gitops-interval` of 30 s;
Argo CD's default without a webhook is 120 s + up to 60 s of jitter). Both sides in one run,
each run alternating the desired version v1/v2 of a two-instance environment; the timeline of
each webhook run printed (answered, release recorded, rollout done, status seen), medians and
the ratio at the end. Release build: `cargo build --release -p slipway`; Go from scripts/setup.

    scripts/bench/gitops.py --runs 5 --polled-runs 3
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_SLIPWAY, free_port, git_repo, start_server, tool_env, websvc_repo  # noqa: E402


def call(port, method, path, token, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})}
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def iso_ms(s):
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--polled-runs", type=int, default=3)
    ap.add_argument("--drift-runs", type=int, default=3)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="slipway-bench-gitops-")
    server = None
    env = dict(tool_env(), NO_COLOR="1")
    try:
        web, prod = free_port(), free_port()
        src = websvc_repo(os.path.join(work, "websvc"), web)
        builds = {}
        for v in ("v1", "v2"):
            subprocess.run([args.slipway, "go", "build", "--version", v], cwd=src, env=env, check=True,
                           capture_output=True)
            builds[v] = os.path.join(work, "builds", v)
            shutil.copytree(os.path.join(src, "dist"), builds[v])
        port = free_port()
        server, admin = start_server(args.slipway, os.path.join(work, "data"), port, "--with-agent")
        url = f"http://127.0.0.1:{port}"
        cli = lambda *a: subprocess.run([args.slipway, *a, "--server", url, "--token", admin], env=env,  # noqa: E731
                                        check=True, capture_output=True, text=True)
        status, body = call(port, "POST", "/api/v1/projects", admin, json.dumps({"name": "shop", "repo": src}))
        assert status == 201, body
        for v in ("v1", "v2"):
            cli("deploy", "web", "--artifacts", builds[v], "--project", "shop")
        desired = lambda v: (f"release:\n  version: {v}\nenvironments:\n  prod:\n    listen: 127.0.0.1:{prod}\n"  # noqa: E731
                             "    instances: 2\n    health: {http: /healthz, interval: 200ms, deadline: 20s}\n")
        config = git_repo(os.path.join(work, "config"), {"envs/prod.yml": desired("v1")})
        secret = "bench-secret"
        status, body = call(port, "POST", "/api/v1/projects", admin,
                            json.dumps({"name": "config", "repo": config, "webhook_secret": secret}))
        assert status == 201, body
        manifest = (f"name: shop-prod\nproject: shop\nsource: {{repo: {config}, path: envs}}\n"
                    "destination: {environment: prod}\nsync_policy: {automated: {selfHeal: true}}\n")
        status, body = call(port, "POST", "/api/v1/apps", admin, manifest)
        assert status == 201, body

        def app():
            return json.loads(call(port, "GET", "/api/v1/apps/shop-prod", admin)[1])

        def commit(v):
            with open(os.path.join(config, "envs/prod.yml"), "w") as f:
                f.write(desired(v))
            subprocess.run(["git", "-C", config, "commit", "-qam", f"prod: {v}"], check=True)
            return subprocess.run(["git", "-C", config, "rev-parse", "HEAD"], check=True, capture_output=True,
                                  text=True).stdout.strip()

        def until_synced(v, sha, t0, limit):
            while time.time() - t0 < limit:
                a = app()["status"]
                if a.get("commit") == sha and a.get("running_version") == v and a["sync"] == "Synced" \
                        and a["health"] == "Healthy":
                    return time.time()
                time.sleep(0.02)
            raise SystemExit(f"{v} not synced in {limit} s: {app()}")

        print(f"{'run':>4} {'answered':>9} {'recorded':>9} {'rolled out':>11} {'status seen':>12}   (s after the webhook was sent)")
        hooked = []
        version = "v1"
        for i in range(args.runs):
            version = "v2" if version == "v1" else "v1"
            sha = commit(version)
            body = json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"name": "config"}})
            sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
            t0 = time.time()
            status, _ = call(port, "POST", "/api/v1/webhooks/github/config", admin, body, {
                "X-GitHub-Event": "push", "X-GitHub-Delivery": f"bench-{i}", "X-Hub-Signature-256": f"sha256={sig}"})
            answered = time.time() - t0
            assert status in (200, 201), status
            done = until_synced(version, sha, t0, 60) - t0
            rel = json.loads(call(port, "GET", "/api/v1/projects/shop/environments/prod/releases?limit=1", admin)[1])[0]
            recorded, rolled = iso_ms(rel["created_at"]) - t0, iso_ms(rel["finished_at"]) - t0
            print(f"{i + 1:>4} {answered:9.3f} {recorded:9.3f} {rolled:11.3f} {done:12.3f}")
            hooked.append(done)
        polled = []
        for i in range(args.polled_runs):
            version = "v2" if version == "v1" else "v1"
            t0 = time.time()
            sha = commit(version)
            polled.append(until_synced(version, sha, t0, 90) - t0)
            print(f"polled run {i + 1}: synced and healthy {polled[-1]:.2f} s after the commit (no webhook)")
        # Drift at the defaults: prod removed from the agent by hand (its socket's API), until
        # it serves again — found and put back by the server within its interval.
        sock = os.path.join(work, "data", "agent.sock")

        def serves():
            try:
                c = http.client.HTTPConnection("127.0.0.1", prod, timeout=1)
                c.request("GET", "/")
                ok = c.getresponse().status == 200
                c.close()
                return ok
            except OSError:
                return False

        healed = []
        for i in range(args.drift_runs):
            subprocess.run(["curl", "-sS", "-X", "DELETE", "--unix-socket", sock, "http://agent/v1/envs/prod"],
                           check=True, capture_output=True)
            t0 = time.time()
            while serves() and time.time() - t0 < 10:
                time.sleep(0.01)
            while not serves():
                if time.time() - t0 > 120:
                    raise SystemExit("the removed environment was not put back in 120 s")
                time.sleep(0.05)
            healed.append(time.time() - t0)
            print(f"drift run {i + 1}: prod removed from the agent by hand, serving again {healed[-1]:.2f} s later")
            time.sleep(1.0)
        if healed:
            print(f"drift → healed at the defaults, median {statistics.median(healed):.2f} s "
                  "(GitOps interval 30 s; Argo CD's self-heal waits for its next refresh, up to 180 s)")
        h, p = statistics.median(hooked), statistics.median(polled) if polled else float("nan")
        print(f"commit → synced and healthy, median: webhook {h:.2f} s (goal ≤ 2 s), "
              f"polling at the default 30 s interval {p:.2f} s; ratio {p / h:.1f}x. "
              "Argo CD without a webhook: up to 180 s.")
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
