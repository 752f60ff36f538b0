#!/usr/bin/env python3
"""scripts/bench/pipeline.py — `slipway run` side by side with gitlab-ci-local.

Both tools run the same .gitlab-ci.yml (shell executor) in the same fresh git repository,
alternating, in one invocation. Prints medians of wall time and peak RSS (the largest process
of each tool's process tree, from wait4), and the ratios. Also measures the per-job cost of
preparing a workspace on a repository of 5,000 files.

Usage: scripts/bench/pipeline.py [--runs N] [--slipway PATH] [--json]
Needs: scripts/setup --bench (Node 22 + gitlab-ci-local into .tools/node) and a release build.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import DEFAULT_SLIPWAY, ROOT

SCENARIOS = {
    "3 stages x 4 jobs": "stages: [one, two, three]\n"
    + "".join(f"s{s}_j{j}:\n  stage: {st}\n  script:\n    - echo {st} {j}\n" for s, st in enumerate(["one", "two", "three"]) for j in range(4)),
    "1 stage x 20 jobs": "stages: [only]\n" + "".join(f"job{j}:\n  stage: only\n  script:\n    - echo job {j}\n" for j in range(20)),
    "1 job": "hello:\n  script:\n    - echo hello\n",
}


def git_repo(path, files):
    os.makedirs(path, exist_ok=True)
    for name, text in files.items():
        full = os.path.join(path, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=path, check=True, env=env)


def measure(cmd, cwd, env):
    """Wall seconds and peak RSS (KiB) of one run; raises if it fails.

    GNU time spawns the command, so the peak RSS is that of the tool's own process tree
    (its largest process), not of a copy of this Python interpreter.
    """
    with tempfile.NamedTemporaryFile("r") as rss:
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed with {p.returncode} in {cwd}:\n{p.stderr.decode(errors='replace')}")
        return wall, int(rss.read().strip().splitlines()[-1])


def clean(cwd):
    for d in (".slipway", ".gitlab-ci-local"):
        shutil.rmtree(os.path.join(cwd, d), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dir", default=None, help="where the fixture repositories go (default: the temp dir)")
    args = ap.parse_args()

    node_bin = os.path.join(ROOT, ".tools/node/node_modules/node/bin")
    gcl = os.path.join(ROOT, ".tools/node/node_modules/.bin/gitlab-ci-local")
    if not os.path.exists(gcl) or not os.path.isdir(node_bin):
        raise SystemExit("gitlab-ci-local is missing: run scripts/setup --bench")
    if not os.path.exists(args.slipway):
        raise SystemExit(f"{args.slipway} is missing: run cargo build --release -p slipway")
    env = dict(os.environ, PATH=node_bin + os.pathsep + os.environ["PATH"], NO_COLOR="1", FORCE_COLOR="0")
    gcl_version = subprocess.run([gcl, "--version"], env=env, capture_output=True, text=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory(prefix="slipway-bench-", dir=args.dir) as tmp:
        for name, yaml in SCENARIOS.items():
            repo = os.path.join(tmp, re.sub(r"\W+", "-", name))
            git_repo(repo, {".gitlab-ci.yml": yaml})
            sides = {
                "slipway": [args.slipway, "run", "--concurrency", "4"],
                "gitlab-ci-local": [gcl, "--concurrency", "4"],
            }
            samples = {k: [] for k in sides}
            # One warm-up each (both tools keep their workspaces between runs, as a developer's
            # repeated runs would), then alternate so both sides see the same machine state.
            for k, cmd in sides.items():
                measure(cmd, repo, env)
            for _ in range(args.runs):
                for k, cmd in sides.items():
                    samples[k].append(measure(cmd, repo, env))
            med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in samples.items()}
            results.append({
                "scenario": name,
                "slipway_ms": round(med["slipway"][0] * 1000, 1),
                "slipway_rss_mib": round(med["slipway"][1] / 1024, 1),
                "peer_ms": round(med["gitlab-ci-local"][0] * 1000, 1),
                "peer_rss_mib": round(med["gitlab-ci-local"][1] / 1024, 1),
                "speedup": round(med["gitlab-ci-local"][0] / med["slipway"][0], 1),
            })

        # Workspace preparation on 5,000 files: slipway reports it per job.
        big = os.path.join(tmp, "five-thousand-files")
        files = {f"pkg{d:02d}/file{i:03d}.go": f"package pkg{d:02d}\n// {'x' * 900}\n" for d in range(50) for i in range(100)}
        files[".gitlab-ci.yml"] = "".join(f"job{j}:\n  script: [\"true\"]\n" for j in range(4))
        git_repo(big, files)
        cold, warm = [], []
        for i in range(args.runs):
            if i % 2 == 0:
                clean(big)  # cold: workspaces made from nothing
            out = subprocess.run([args.slipway, "run", "--json", "--concurrency", "1"], cwd=big, env=env, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                ev = json.loads(line)
                m = re.match(r"Preparing workspace: (\d+) files? \((\d+) copied, (\d+) removed\) in ([\d.]+)(µs|ms|s)$", ev.get("message", ""))
                if m:
                    v = float(m.group(4)) * {"µs": 0.001, "ms": 1, "s": 1000}[m.group(5)]
                    (cold if i % 2 == 0 else warm).append(v)
        clean(big)
        prep_cold = round(statistics.median(cold), 1)
        prep_warm = round(statistics.median(warm), 1)

    fs = subprocess.run(["stat", "-f", "-c", "%T", args.dir or tempfile.gettempdir()], capture_output=True, text=True).stdout.strip()
    if args.json:
        print(json.dumps({"runs": args.runs, "peer": gcl_version, "scenarios": results, "workspace_5000_files_ms": {"cold": prep_cold, "warm": prep_warm}, "fs": fs}))
        return
    print(f"slipway run vs gitlab-ci-local {gcl_version} (shell executor, --concurrency 4), median of {args.runs} runs each")
    print(f"{'scenario':<20} {'slipway':>10} {'RSS':>9} {'gitlab-ci-local':>16} {'RSS':>9} {'speedup':>8}")
    for r in results:
        print(f"{r['scenario']:<20} {r['slipway_ms']:>8.1f}ms {r['slipway_rss_mib']:>6.1f}MiB {r['peer_ms']:>14.1f}ms {r['peer_rss_mib']:>6.1f}MiB {r['speedup']:>7.1f}x")
    print(f"workspace preparation per job, 5,000 files ({fs}): {prep_cold} ms from nothing, {prep_warm} ms when reused (medians)")


if __name__ == "__main__":
    main()
