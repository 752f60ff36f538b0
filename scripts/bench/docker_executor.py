#!/usr/bin/env python3
"""scripts/bench/docker_executor.py — what the Docker executor adds to a job over `docker run`.

One job `image: IMAGE, script: [true]` through `slipway run` side by side with
`docker run --rm --network host IMAGE sh -c true`, alternating, in one invocation; and
`slipway run --executor shell` of the same file for the pipeline's own cost. Prints medians
and the overhead per job: the whole `slipway run` (planning, workspace, the container, its
removal) minus `docker run` of the same image and command.

Usage: scripts/bench/docker_executor.py [--runs N] [--slipway PATH] [--image REF] [--json]
Needs: a running Docker Engine (scripts/dockerd) and a release build; the image is imported
from this machine's busybox-static when it is not there (nothing is pulled).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import DEFAULT_SLIPWAY, git_repo

IMAGE = "slipway-bench/busybox:1"


def ensure_image(image):
    if subprocess.run(["docker", "image", "inspect", image], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "bin"))
        subprocess.run(["cp", "/bin/busybox", os.path.join(root, "bin", "busybox")], check=True)
        for applet in ["sh", "true", "echo", "printf", "test"]:
            os.symlink("busybox", os.path.join(root, "bin", applet))
        tar = subprocess.run(["tar", "-C", root, "-c", "."], check=True, stdout=subprocess.PIPE).stdout
        subprocess.run(["docker", "import", "-", image], input=tar, check=True, stdout=subprocess.DEVNULL)


def timed(cmd, cwd=None):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with {p.returncode}:\n{p.stderr.decode(errors='replace')}")
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    ap.add_argument("--image", default=IMAGE)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.image == IMAGE:
        ensure_image(a.image)
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "repo")
        git_repo(d, {".gitlab-ci.yml": f"job:\n  image: {a.image}\n  script:\n    - 'true'\n"})
        sides = {
            "docker run": ["docker", "run", "--rm", "--network", "host", a.image, "sh", "-c", "true"],
            "slipway run (Docker executor)": [a.slipway, "run"],
            "slipway run --executor shell": [a.slipway, "run", "--executor", "shell"],
        }
        for cmd in sides.values():  # warm-up: caches, the image's layers
            timed(cmd, d)
        times = {k: [] for k in sides}
        for _ in range(a.runs):
            for name, cmd in sides.items():
                times[name].append(timed(cmd, d))
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = med["slipway run (Docker executor)"] - med["docker run"]
    if a.json:
        print(json.dumps({"runs": a.runs, "median_s": med, "overhead_per_job_ms": overhead * 1000}))
        return
    print(f"{a.runs} runs each, alternating; one job `true` in {a.image}")
    for k, v in med.items():
        print(f"  {k:32} median {v * 1000:7.1f} ms")
    print(f"  overhead per job (slipway run − docker run): {overhead * 1000:+.1f} ms (goal ≤ 100 ms)")
    print(f"  slipway / docker run: {med['slipway run (Docker executor)'] / med['docker run']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
