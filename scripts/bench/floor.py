#!/usr/bin/env python3
"""scripts/bench/floor.py — `slipway run` on N trivial jobs against its floor: N shells.

A run of N jobs that each echo one line cannot be faster than starting N `bash -c` processes
with the same concurrency, their output written to N files. Both are timed here, alternating,
in one invocation; the median of each and slipway's time as a multiple of the floor are
printed (issue 17's goal: ≤ 1.5× for 12 and 20 jobs on disk).

Usage: scripts/bench/floor.py [--runs N] [--jobs 12,20] [--concurrency 4] [--slipway PATH] [--dir DIR] [--json]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

from common import DEFAULT_SLIPWAY, git_repo


def floor_once(n, concurrency, out_dir):
    """N `bash -c 'echo …'` with at most `concurrency` running, each into its own file."""
    t = time.perf_counter()
    running = []
    for i in range(n):
        if len(running) >= concurrency:
            running.pop(0).wait()
        f = open(os.path.join(out_dir, f"job{i}.log"), "w")
        running.append(subprocess.Popen(["bash", "--noprofile", "--norc", "-c", f"echo job {i}"], stdout=f, stderr=subprocess.STDOUT))
        f.close()
    for p in running:
        p.wait()
    return time.perf_counter() - t


def slipway_once(cmd, repo):
    t = time.perf_counter()
    subprocess.run(cmd, cwd=repo, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--jobs", default="12,20")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    ap.add_argument("--dir", default=None, help="where the fixtures go (default: the temp dir)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="slipway-floor-", dir=a.dir) as tmp:
        for n in (int(x) for x in a.jobs.split(",")):
            repo = os.path.join(tmp, f"jobs-{n}")
            git_repo(repo, {".gitlab-ci.yml": "".join(f"job{j}:\n  script:\n    - echo job {j}\n" for j in range(n))})
            out_dir = os.path.join(tmp, f"floor-{n}")
            os.makedirs(out_dir)
            cmd = [a.slipway, "run", "--concurrency", str(a.concurrency)]
            slipway_once(cmd, repo)  # warm-up: workspaces made once, as a developer's repeated runs
            floor_once(n, a.concurrency, out_dir)
            s, f = [], []
            for _ in range(a.runs):
                s.append(slipway_once(cmd, repo))
                f.append(floor_once(n, a.concurrency, out_dir))
            ms, mf = statistics.median(s), statistics.median(f)
            results.append({"jobs": n, "slipway_ms": round(ms * 1000, 1), "floor_ms": round(mf * 1000, 1), "ratio": round(ms / mf, 2)})
    fs = subprocess.run(["stat", "-f", "-c", "%T", a.dir or tempfile.gettempdir()], capture_output=True, text=True).stdout.strip()
    if a.json:
        print(json.dumps({"runs": a.runs, "concurrency": a.concurrency, "fs": fs, "results": results}))
        return
    print(f"slipway run vs N `bash -c` (concurrency {a.concurrency}, {fs}), median of {a.runs} runs each")
    for r in results:
        print(f"  {r['jobs']:>3} jobs: slipway {r['slipway_ms']:>7.1f} ms, floor {r['floor_ms']:>7.1f} ms, {r['ratio']:.2f}× the floor")


if __name__ == "__main__":
    main()
