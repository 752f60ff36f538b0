#!/usr/bin/env python3
"""scripts/bench/image.py — `slipway image build` vs `docker build` of the same image.

A ~10 MB Go binary (examples/hello-service with 2 MB of embedded Go source text), then,
alternating:
`slipway image build` to an OCI layout, and `docker build --no-cache` of the equivalent
Dockerfile (FROM scratch, COPY the binary, USER 65532, ENTRYPOINT) on the local Docker Engine.
Also checks that a second build gives the same digest. Prints medians and the ratio.

Needs: scripts/setup (Go, docker.io), scripts/dockerd, a release build of slipway.
Usage: scripts/bench/image.py [--runs N]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from common import DEFAULT_SLIPWAY, ROOT, tool_env


def timed(cmd, cwd, env):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return time.perf_counter() - t, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    args = ap.parse_args()
    env = tool_env(DOCKER_BUILDKIT="0")
    with tempfile.TemporaryDirectory(prefix="slipway-imgbench-") as tmp:
        src = os.path.join(tmp, "app")
        shutil.copytree(os.path.join(ROOT, "examples/hello-service"), src, ignore=shutil.ignore_patterns(".slipway", "dist"))
        # 2 MB of text-like data (Go's own sources, repeated) makes a ~10 MB binary that
        # compresses like real code does; random bytes would measure gzip on noise.
        goroot = subprocess.run(["go", "env", "GOROOT"], capture_output=True, text=True, env=env).stdout.strip()
        text = b""
        for dirpath, _, files in sorted(os.walk(os.path.join(goroot, "src", "net", "http"))):
            for name in sorted(files):
                if name.endswith(".go"):
                    with open(os.path.join(dirpath, name), "rb") as g:
                        text += g.read()
                if len(text) >= 2 * 1024 * 1024:
                    break
            if len(text) >= 2 * 1024 * 1024:
                break
        with open(os.path.join(src, "data.bin"), "wb") as f:
            f.write((text * 2)[: 2 * 1024 * 1024])
        with open(os.path.join(src, "embed.go"), "w") as f:
            f.write('package main\n\nimport _ "embed"\n\n//go:embed data.bin\nvar blob []byte\n\nfunc init() {\n\tif len(blob) == 0 {\n\t\tpanic("no data")\n\t}\n}\n')
        binary = os.path.join(tmp, "app_bin")
        subprocess.run(["go", "build", "-trimpath", "-o", binary, "."], cwd=src, env=dict(env, CGO_ENABLED="0"), check=True)
        size = os.path.getsize(binary)
        ctx = os.path.join(tmp, "ctx")
        os.makedirs(ctx)
        shutil.copy(binary, os.path.join(ctx, "app"))
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write('FROM scratch\nCOPY app /usr/local/bin/app\nUSER 65532:65532\nENTRYPOINT ["/usr/local/bin/app"]\n')
        ours, plain, theirs, cached, theirs_cached, digests = [], [], [], [], [], set()
        build = [args.slipway, "image", "build", "--binary", f"linux/amd64={binary}", "--name", "app", "--tag", "bench", "--json"]
        for i in range(args.runs + 1):
            # Cold: nothing reused on either side.
            d, out = timed(build + ["--no-cache", "--layout", os.path.join(tmp, f"layout{i}")], tmp, env)
            digests.add(json.loads(out)["digest"])
            # Docker's local store keeps layers uncompressed: the like-for-like build.
            d1, _ = timed(build + ["--no-cache", "--compression", "none", "--layout", os.path.join(tmp, f"plain{i}")], tmp, env)
            d2, _ = timed(["docker", "build", "-q", "--no-cache", "-t", "slipway-bench:latest", ctx], tmp, env)
            # Warm: the same binary again, each side with its cache.
            d3, out = timed(build + ["--layout", os.path.join(tmp, f"warm{i}")], tmp, env)
            digests.add(json.loads(out)["digest"])
            d4, _ = timed(["docker", "build", "-q", "-t", "slipway-bench:latest", ctx], tmp, env)
            if i > 0:  # the first round warms all up
                ours.append(d)
                plain.append(d1)
                theirs.append(d2)
                cached.append(d3)
                theirs_cached.append(d4)
        subprocess.run(["docker", "rmi", "-f", "slipway-bench:latest"], capture_output=True)
    o, p, t = statistics.median(ours), statistics.median(plain), statistics.median(theirs)
    print(f"image of a {size / 1048576:.1f} MiB Go binary (median of {args.runs})")
    print(f"  slipway image build (gzip layers)  {o * 1000:7.1f} ms   {t / o:5.1f}x")
    print(f"  slipway image build (plain tar)    {p * 1000:7.1f} ms   {t / p:5.1f}x")
    print(f"  docker build --no-cache            {t * 1000:7.1f} ms")
    c, tc = statistics.median(cached), statistics.median(theirs_cached)
    print(f"  unchanged binary, slipway (cache)  {c * 1000:7.1f} ms   {tc / c:5.1f}x")
    print(f"  unchanged binary, docker build     {tc * 1000:7.1f} ms")
    print(f"  same digest every time             {len(digests) == 1}")


if __name__ == "__main__":
    main()
