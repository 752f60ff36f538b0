#!/usr/bin/env python3
"""scripts/bench/deploy.py — deploys under load on the local agent, measured.

Builds the websvc fixture in several versions (good, unhealthy, answering errors), starts
an agent in a temporary data directory, and with `slipway-load` (slipway-testkit, built with `cargo build --release -p slipway-testkit`) sending a steady rate
of requests to the entry point measures, each scenario repeated:

  proxy     p50/p99 latency through the agent's proxy vs straight to one instance, same
            client, same rate (1,000 req/s by default), alternating
  rolling   a rolling update of 3 instances (surge 1): failed requests, duration
  bluegreen a blue-green switch of 3 instances: failed requests
  canary    a canary (30%) whose release answers 500 to every third request: time from the
            start of the analysis to the abort, failed requests and their share
  unhealthy a release that never passes its health check: failed requests, time from the
            verdict to the old release serving everything again
  crash     a release that exits at start: time to the verdict
  docker    a rolling update of 3 containers (surge 1) on the Docker Engine: failed requests
  degrade   a canary (30%) that passes its health checks, then fails them and answers 500:
            time from its first failed request to traffic back on the old release

Prints medians. Needs: scripts/setup, a release build of slipway.
Usage: scripts/bench/deploy.py [--runs N] [--rate R]
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from common import DEFAULT_LOAD, DEFAULT_SLIPWAY, ROOT, free_port, tool_env

ENVIRONMENTS = """include:
  - template: slipway/go.yml
environments:
  web:
    instances: 3
    listen: 127.0.0.1:{web}
    strategy: {{type: rolling, max_surge: 1, max_unavailable: 0}}
    health: {{http: /healthz, interval: 200ms, deadline: 5s}}
  bg:
    instances: 3
    listen: 127.0.0.1:{bg}
    strategy: {{type: blue-green, keep_old: 1s}}
    health: {{http: /healthz, interval: 200ms, deadline: 5s}}
  dock:
    target: docker
    instances: 3
    listen: 127.0.0.1:{dock}
    strategy: {{type: rolling, max_surge: 1, max_unavailable: 0}}
    health: {{http: /healthz, interval: 200ms, deadline: 10s}}
  can:
    instances: 2
    listen: 127.0.0.1:{can}
    strategy:
      type: canary
      steps: [{{weight: 30, pause: 30s}}]
      analysis: {{interval: 1s, max_error_rate: 5%, min_requests: 20}}
    health: {{http: /healthz, interval: 200ms, deadline: 5s}}
"""


class Bench:
    def __init__(self, slipway, load_bin, tmp, env):
        self.slipway, self.load_bin, self.tmp, self.env = slipway, load_bin, tmp, env
        self.project = os.path.join(tmp, "websvc")
        shutil.copytree(os.path.join(ROOT, "fixtures/go/websvc"), self.project)
        self.ports = {"web": free_port(), "bg": free_port(), "can": free_port(), "dock": free_port()}
        with open(os.path.join(self.project, ".slipway.yml"), "w") as f:
            f.write(ENVIRONMENTS.format(**self.ports))
        self.env = dict(env, SLIPWAY_DATA_DIR=os.path.join(tmp, "data"), NO_COLOR="1", SLIPWAY_USER="bench")

    def sw(self, *args, check=True):
        p = subprocess.run([self.slipway, *args], cwd=self.project, env=self.env, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise SystemExit(f"slipway {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
        return p

    def build(self, version):
        out = os.path.join(self.tmp, "builds", version)
        self.sw("go", "build", "--version", version)
        shutil.copytree(os.path.join(self.project, "dist"), out)
        return out

    def image(self, version):
        d = os.path.join(self.tmp, "builds", version)
        self.sw("image", "build", "--from", os.path.join(d, "manifest.json"), "--name", "websvc", "--tag", version,
                "--tarball", os.path.join(d, "image.tar"), "--compression", "none", "--no-sbom")

    def deploy(self, env, version, check=True):
        t = time.perf_counter()
        artifact = os.path.join(self.tmp, "builds", version)
        if env == "dock":
            artifact = os.path.join(artifact, "image.tar")
        p = self.sw("deploy", env, "--artifacts", artifact, check=check)
        return time.perf_counter() - t, p

    def load(self, port, rate, path="/"):
        stop = os.path.join(self.tmp, f"stop-{port}")
        if os.path.exists(stop):
            os.remove(stop)
        p = subprocess.Popen(
            [self.load_bin, f"http://127.0.0.1:{port}{path}", "--rate", str(rate), "--duration", "120s", "--stop-file", stop],
            env=self.env, stdout=subprocess.PIPE, text=True,
        )
        time.sleep(0.5)

        def finish():
            time.sleep(0.3)
            open(stop, "w").close()
            return json.loads(p.communicate()[0])

        return finish

    def timed_load(self, port, rate, seconds):
        p = subprocess.run([self.load_bin, f"http://127.0.0.1:{port}/", "--rate", str(rate), "--duration", f"{seconds}s"],
                           env=self.env, capture_output=True, text=True, check=True)
        return json.loads(p.stdout)

    def instance_port(self, env):
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join(self.env["SLIPWAY_DATA_DIR"], "agent.sock"))
        s.sendall(f"GET /v1/envs/{env} HTTP/1.0\r\nHost: agent\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        status = json.loads(data.split(b"\r\n\r\n", 1)[1])
        return status["groups"][0]["instances"][0]["port"]


def stamp(stderr, pattern):
    for line in stderr.splitlines():
        if re.search(pattern, line):
            m = re.match(r"\[\s*([0-9.]+)s\]", line)
            if m:
                return float(m.group(1))
    return None


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=1000, help="req/s for the proxy overhead runs")
    ap.add_argument("--seconds", type=int, default=5, help="length of each proxy overhead run")
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    ap.add_argument("--load", default=DEFAULT_LOAD, help="the slipway-load binary (cargo build --release -p slipway-testkit)")
    args = ap.parse_args()
    env = tool_env()
    with tempfile.TemporaryDirectory(prefix="slipway-deploybench-") as tmp:
        b = Bench(args.slipway, args.load, tmp, env)
        for v in ["v1", "v2", "v3-unhealthy", "v4-errors", "v5-crash", "v6-degrade"]:
            b.build(v)
        for v in ["v1", "v2"]:
            b.image(v)
        b.sw("agent", "start")
        try:
            run(b, args)
        finally:
            b.sw("agent", "stop", check=False)


def run(b, args):
    # proxy overhead
    b.deploy("web", "v1")
    direct = b.instance_port("web")
    via, straight = [], []
    for _ in range(args.runs):
        via.append(b.timed_load(b.ports["web"], args.rate, args.seconds))
        straight.append(b.timed_load(direct, args.rate, args.seconds))
    p50v, p99v = med([r["latency_ms"]["p50"] for r in via]), med([r["latency_ms"]["p99"] for r in via])
    p50d, p99d = med([r["latency_ms"]["p50"] for r in straight]), med([r["latency_ms"]["p99"] for r in straight])
    print(f"proxy     {args.rate} req/s × {args.seconds}s × {args.runs}: through the proxy p50 {p50v:.3f} ms p99 {p99v:.3f} ms; "
          f"direct p50 {p50d:.3f} ms p99 {p99d:.3f} ms; added p99 {p99v - p99d:+.3f} ms; "
          f"failed {sum(r['failed'] for r in via)} of {sum(r['requests'] for r in via)}")

    # rolling update under load
    fails, reqs, took, p99 = [], [], [], []
    version = "v1"
    for _ in range(args.runs):
        version = "v2" if version == "v1" else "v1"
        finish = b.load(b.ports["web"], 500)
        t, _ = b.deploy("web", version)
        r = finish()
        fails.append(r["failed"]); reqs.append(r["requests"]); took.append(t); p99.append(r["latency_ms"]["p99"])
    print(f"rolling   3 instances, surge 1, 500 req/s × {args.runs}: failed {sum(fails)} of {sum(reqs)} requests; "
          f"deploy {med(took):.2f} s (median); p99 {med(p99):.3f} ms")

    # blue-green switch under load
    b.deploy("bg", "v1")
    fails, reqs, took = [], [], []
    version = "v1"
    for _ in range(args.runs):
        version = "v2" if version == "v1" else "v1"
        time.sleep(1.5)  # keep_old: 1s — the previous old set is gone
        finish = b.load(b.ports["bg"], 500)
        t, _ = b.deploy("bg", version)
        r = finish()
        fails.append(r["failed"]); reqs.append(r["requests"]); took.append(t)
    print(f"bluegreen 3 instances, 500 req/s × {args.runs}: failed {sum(fails)} of {sum(reqs)} requests; deploy {med(took):.2f} s")

    # a canary that answers errors
    b.deploy("can", "v1")
    detect, failed_share, window, fails, reqs = [], [], [], [], []
    for _ in range(args.runs):
        finish = b.load(b.ports["can"], 500)
        _, p = b.deploy("can", "v4-errors", check=False)
        r = finish()
        assert p.returncode == 1, p.stderr
        held, aborted = stamp(p.stderr, "holding"), stamp(p.stderr, "canary analysis failed")
        detect.append(aborted - held)
        fails.append(r["failed"]); reqs.append(r["requests"])
        window.append((r["last_failure_ms"] - r["first_failure_ms"]) / 1000)
        failed_share.append(r["failed"] / r["requests"])
    print(f"canary    30% to a release failing 1/3 of requests, analysis every 1 s, 500 req/s × {args.runs}: "
          f"aborted {med(detect):.2f} s after the analysis began (median; 2 intervals = 2 s); "
          f"failures for {med(window):.2f} s; failed {sum(fails)} of {sum(reqs)} requests")

    # a release that never becomes healthy
    back, fails, reqs, verdict = [], [], [], []
    for _ in range(args.runs):
        finish = b.load(b.ports["web"], 500)
        _, p = b.deploy("web", "v3-unhealthy", check=False)
        r = finish()
        assert p.returncode == 1, p.stderr
        m = re.search(r"rolled back to \S+ \(#\d+\) in ([0-9.]+)s", p.stderr)
        back.append(float(m.group(1)))
        verdict.append(stamp(p.stderr, "✗"))
        fails.append(r["failed"]); reqs.append(r["requests"])
    print(f"unhealthy deadline 5 s, 500 req/s × {args.runs}: verdict at {med(verdict):.1f} s; traffic back on the old release "
          f"{med(back):.2f} s after the verdict; failed {sum(fails)} of {sum(reqs)} requests")

    took = []
    for _ in range(args.runs):
        t, p = b.deploy("web", "v5-crash", check=False)
        assert p.returncode == 1 and "keeps crashing" in p.stderr, p.stderr
        took.append(t)
    print(f"crash     a release that exits at start: rolled back {med(took):.2f} s after the deploy began (deadline 5 s)")

    # containers: a rolling update under load
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        b.deploy("dock", "v1")
        fails, reqs, took = [], [], []
        version = "v1"
        for _ in range(args.runs):
            version = "v2" if version == "v1" else "v1"
            finish = b.load(b.ports["dock"], 500)
            t, _ = b.deploy("dock", version)
            r = finish()
            fails.append(r["failed"]); reqs.append(r["requests"]); took.append(t)
        print(f"docker    3 containers, surge 1, 500 req/s × {args.runs}: failed {sum(fails)} of {sum(reqs)} requests; deploy {med(took):.2f} s")
    else:
        print("docker    skipped: no Docker Engine answers (scripts/dockerd)")

    # a canary that turns bad after it became healthy
    window, fails, reqs = [], [], []
    for _ in range(args.runs):
        finish = b.load(b.ports["can"], 500)
        _, p = b.deploy("can", "v6-degrade", check=False)
        r = finish()
        assert p.returncode == 1 and ("became unhealthy" in p.stderr or "analysis failed" in p.stderr), p.stderr
        window.append((r["last_failure_ms"] - r["first_failure_ms"]) / 1000)
        fails.append(r["failed"]); reqs.append(r["requests"])
    print(f"degrade   canary healthy, then failing (health every 200 ms, 3 failures), 500 req/s × {args.runs}: "
          f"traffic back on the old release {med(window):.2f} s after its first failed request; failed {sum(fails)} of {sum(reqs)} requests")


if __name__ == "__main__":
    main()
