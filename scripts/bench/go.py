#!/usr/bin/env python3
"""scripts/bench/go.py — slipway's Go commands side by side with the plain Go toolchain.

1. `slipway go test ./...` vs `go test -json -cover ./...` on the 23-package fixture
   (fixtures/go/graph), warm build cache, `-count=1` so tests really run: the overhead.
2. After a one-file change in a leaf package: `slipway go test --changed-since HEAD` vs testing
   everything (both `-count=1`): the speed-up, and whether the verdict is the same.
3. `slipway go build` of 4 platforms vs the same four `go build` commands one after another
   (warm cache, a fresh change to main.go before each, so every platform compiles and links)
   on examples/hello-service.

Prints medians and ratios. Needs: scripts/setup (Go), a release build of slipway.
Usage: scripts/bench/go.py [--runs N]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from common import DEFAULT_SLIPWAY, ROOT, tool_env
PLATFORMS = ["linux/amd64", "linux/arm64", "darwin/arm64", "windows/amd64"]


def timed(cmd, cwd, env, ok=(0,)):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if p.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}")
    return time.perf_counter() - t, p.returncode


def git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    subprocess.run(["git", *args], cwd=cwd, check=True, env=env, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    args = ap.parse_args()
    env = tool_env(NO_COLOR="1")
    sw = args.slipway
    with tempfile.TemporaryDirectory(prefix="slipway-gobench-") as tmp:
        graph = os.path.join(tmp, "graph")
        shutil.copytree(os.path.join(ROOT, "fixtures/go/graph"), graph)
        git(graph, "init", "-q", "-b", "main")
        git(graph, "add", "-A")
        git(graph, "commit", "-q", "-m", "graph")
        # 1. overhead
        timed(["go", "test", "-count=1", "./..."], graph, env)  # warm the build cache
        ours, theirs = [], []
        for _ in range(args.runs):
            ours.append(timed([sw, "go", "test", "./...", "--", "-count=1"], graph, env)[0])
            theirs.append(timed(["go", "test", "-json", "-cover", "-count=1", "./..."], graph, env)[0])
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"go test, 23 packages, -count=1, warm cache (median of {args.runs})")
        print(f"  slipway go test ./...          {o:6.2f}s")
        print(f"  go test -json -cover ./...     {t:6.2f}s")
        print(f"  overhead                       {100 * (o - t) / t:+6.1f}%")
        # 2. changed-since
        with open(os.path.join(graph, "report/format/format.go"), "a") as f:
            f.write("\n// a one-line change in a leaf package\n")
        everything, changed = [], []
        verdicts = set()
        for _ in range(args.runs):
            d, c1 = timed([sw, "go", "test", "./...", "--", "-count=1"], graph, env, ok=(0, 1))
            everything.append(d)
            d, c2 = timed([sw, "go", "test", "--changed-since", "HEAD", "./...", "--", "-count=1"], graph, env, ok=(0, 1))
            changed.append(d)
            verdicts.add((c1, c2))
        e, c = statistics.median(everything), statistics.median(changed)
        print(f"after a one-file change in report/format (median of {args.runs})")
        print(f"  everything                     {e:6.2f}s")
        print(f"  --changed-since HEAD           {c:6.2f}s")
        print(f"  speed-up                       {e / c:6.1f}x   same verdict: {all(a == b for a, b in verdicts)}")
        # 3. go build of 4 platforms
        hs = os.path.join(tmp, "hello")
        shutil.copytree(os.path.join(ROOT, "examples/hello-service"), hs, ignore=shutil.ignore_patterns(".slipway", "dist"))
        git(hs, "init", "-q", "-b", "main")
        git(hs, "add", "-A")
        git(hs, "commit", "-q", "-m", "hello")
        plat = ",".join(PLATFORMS)
        timed([sw, "go", "build", "--platform", plat, "--version", "v1"], hs, env)  # warm the cache for every platform
        ours, seq = [], []
        main_go = os.path.join(hs, "main.go")
        edit = 0

        def change():
            # A real change each time, so every platform recompiles and relinks main.
            nonlocal edit
            edit += 1
            with open(main_go, "a") as f:
                f.write(f"\nvar benchEdit{edit} = {edit}\n")

        for _ in range(args.runs):
            change()
            ours.append(timed([sw, "go", "build", "--platform", plat, "--version", "v1"], hs, env)[0])
            change()
            t0 = time.perf_counter()
            for p in PLATFORMS:
                goos, goarch = p.split("/")
                penv = dict(env, GOOS=goos, GOARCH=goarch, CGO_ENABLED="0")
                timed(["go", "build", "-trimpath", "-ldflags=-X 'main.version=v1'", "-o", os.path.join(tmp, f"seq_{goos}_{goarch}"), "."], hs, penv)
            seq.append(time.perf_counter() - t0)
        o, s = statistics.median(ours), statistics.median(seq)
        print(f"go build after a change to main.go, 4 platforms, warm cache (median of {args.runs}, {os.cpu_count()} cores)")
        print(f"  slipway go build               {o:6.2f}s")
        print(f"  4 x go build, one by one       {s:6.2f}s")
        print(f"  speed-up                       {s / o:6.2f}x")


if __name__ == "__main__":
    main()
