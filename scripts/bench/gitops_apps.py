#!/usr/bin/env python3
"""scripts/bench/gitops_apps.py — 100 GitOps applications in one config repository, each keeping
its own environment on the local agent (one instance each, automated, self-heal). A push that
changes one application's file is announced by the repository's signed webhook; the server
reads only that application's file again (one fetch, one `git ls-tree` for the repository) and
syncs it. The other side, in the same run: a second server with `--gitops-refresh-all`, where a
push makes every application of the repository look (read, compare, observe) — what Argo CD does
on a webhook (argo-cd #4272). Printed: per push the time until the changed application is
synced and healthy and how many applications were read; medians and the ratio. Release build: `cargo build --release -p slipway`; Go from scripts/setup.

    scripts/bench/gitops_apps.py --apps 100 --runs 5
"""

import argparse
import hashlib
import hmac
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_SLIPWAY, free_port, git_repo, start_server, tool_env, websvc_repo  # noqa: E402
from gitops import call  # noqa: E402


def bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def side(args, work, env, refresh_all):
    """One server with `--apps` applications; the pushes' (seconds to synced, applications read)."""
    server = None
    try:
        src = websvc_repo(os.path.join(work, "websvc"), free_port())
        port = free_port()
        # The interval far away: what is read after a push is what the push made look.
        extra = ["--gitops-interval", "1h"] + (["--gitops-refresh-all"] if refresh_all else [])
        server, admin = start_server(args.slipway, os.path.join(work, "data"), port, "--with-agent", *extra)
        url = f"http://127.0.0.1:{port}"
        status, body = call(port, "POST", "/api/v1/projects", admin, json.dumps({"name": "shop", "repo": src}))
        assert status == 201, body
        for v in ("v1", "v2"):
            subprocess.run([args.slipway, "go", "build", "--version", v], cwd=src, env=env, check=True,
                           capture_output=True)
            out = os.path.join(work, "builds", v)
            shutil.copytree(os.path.join(src, "dist"), out)
            subprocess.run([args.slipway, "deploy", "web", "--artifacts", out, "--project", "shop", "--server", url,
                            "--token", admin], env=env, check=True, capture_output=True)
        # Listen ports below the kernel's ephemeral range, so no instance's own port takes one.
        ports, p = {}, 20000 + (os.getpid() % 200) * 40
        for i in range(args.apps):
            while not bindable(p):
                p += 1
            ports[f"e{i:03}"], p = p, p + 1

        def desired(name, v):
            return (f"release:\n  version: {v}\nenvironments:\n  {name}:\n    listen: 127.0.0.1:{ports[name]}\n"
                    "    health: {http: /healthz, interval: 200ms, deadline: 20s}\n")

        config = git_repo(os.path.join(work, "config"), {f"envs/{n}.yml": desired(n, "v1") for n in ports})
        secret = "bench-secret"
        status, body = call(port, "POST", "/api/v1/projects", admin,
                            json.dumps({"name": "config", "repo": config, "webhook_secret": secret}))
        assert status == 201, body
        t0 = time.time()
        for n in ports:
            manifest = (f"name: {n}\nproject: shop\nsource: {{repo: {config}, path: envs}}\n"
                        f"destination: {{environment: {n}}}\nsync_policy: {{automated: {{selfHeal: true}}}}\n")
            status, body = call(port, "POST", "/api/v1/apps", admin, manifest)
            assert status == 201, body
        mode = "every application" if refresh_all else "only the changed ones"
        print(f"\na push refreshes {mode}: {args.apps} applications added and synced in {time.time() - t0:.1f} s")

        def apps():
            return {a["name"]: a for a in json.loads(call(port, "GET", "/api/v1/apps", admin)[1])}

        print(f"{'push':>4} {'synced+healthy':>15} {'apps read':>10} {'round done':>12}   (s after the webhook was sent)")
        pushed, read, rounds = [], [], []
        version = {n: "v1" for n in ports}
        names = sorted(ports)
        for i in range(args.runs):
            n = names[(i * 37 + 50) % len(names)]
            version[n] = "v2" if version[n] == "v1" else "v1"
            with open(os.path.join(config, "envs", f"{n}.yml"), "w") as f:
                f.write(desired(n, version[n]))
            subprocess.run(["git", "-C", config, "commit", "-qam", f"{n}: {version[n]}"], check=True)
            sha = subprocess.run(["git", "-C", config, "rev-parse", "HEAD"], check=True, capture_output=True,
                                 text=True).stdout.strip()
            before = apps()
            body = json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"name": "config"}})
            sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
            t0 = time.time()
            status, _ = call(port, "POST", "/api/v1/webhooks/github/config", admin, body, {
                "X-GitHub-Event": "push", "X-GitHub-Delivery": f"bench-{i}", "X-Hub-Signature-256": f"sha256={sig}"})
            assert status in (200, 201), status
            while True:
                a = apps()[n]["status"]
                if a.get("commit") == sha and a.get("running_version") == version[n] and a["sync"] == "Synced" \
                        and a["health"] == "Healthy":
                    break
                if time.time() - t0 > 120:
                    raise SystemExit(f"{n} not synced in 120 s: {a}")
                time.sleep(0.02)
            done = time.time() - t0
            # Until the round that read it has ended (every application read, when all are).
            if not refresh_all:
                time.sleep(1.0)
            while True:
                after = apps()
                looked = sum(1 for m in names if after[m]["status"].get("commit") != before[m]["status"].get("commit"))
                if not refresh_all or looked == len(names):
                    break
                time.sleep(0.05)
            whole = time.time() - t0
            print(f"{i + 1:>4} {done:15.3f} {looked:>10} {whole if refresh_all else done:12.3f}")
            pushed.append(done)
            read.append(looked)
            rounds.append(whole if refresh_all else done)
        return statistics.median(pushed), statistics.median(read), statistics.median(rounds)
    finally:
        if server:
            server.terminate()
            server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    args = ap.parse_args()
    env = dict(tool_env(), NO_COLOR="1")
    results = {}
    for refresh_all in (False, True):
        work = tempfile.mkdtemp(prefix="slipway-bench-gitops-apps-")
        try:
            results[refresh_all] = side(args, work, env, refresh_all)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    (ours, ours_read, ours_round), (all_, all_read, all_round) = results[False], results[True]
    print(f"\none push to one of {args.apps} applications' files, median: the changed one synced and healthy in "
          f"{ours:.2f} s, {ours_read:.0f} application(s) read; refreshing every application (Argo CD's way, "
          f"--gitops-refresh-all): synced in {all_:.2f} s ({all_ / ours:.1f}x), {all_read:.0f} read, "
          f"the round done in {all_round:.2f} s ({all_round / ours_round:.1f}x)")


if __name__ == "__main__":
    main()
