#!/usr/bin/env python3
"""scripts/bench/notify.py — from a dead instance to a person told, measured on `slipway
server`: an instance of the websvc fixture is frozen (SIGSTOP: it holds its port and answers
nothing, as a hung process does), and the timeline is taken from the outside —

  up==0     the series `up{environment="web"}` reads 0 (`/api/v1/query`, polled every 20 ms)
  firing    the rule `up{environment="web"} == 0` with `for: FOR` is firing (`/api/v1/alerts`)
  told      the webhook receiver (on loopback, in this script) has the notification

— against the bound the issue sets: firing within `for` + one evaluation interval of `up`
reading 0, and the notification within 1 s of firing. Then the instance is thawed and the
resolution timed the same way. Repeated, medians printed. Release build:
`cargo build --release -p slipway`.

    scripts/bench/notify.py --runs 5 --interval 1s --for 2s
"""

import argparse
import http.server
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_SLIPWAY, ROOT, free_port, tool_env  # noqa: E402

PIPELINE = """build:
  script: [echo hi]
environments:
  web:
    listen: 127.0.0.1:{port}
    health: {{http: /healthz, interval: 200ms, deadline: 10s}}
    watch: false
"""

RULES = """groups:
  - name: instance-health
    rules:
      - alert: InstanceDown
        expr: up{{environment="web"}} == 0
        for: {for_}
        labels:
          severity: page
        annotations:
          summary: "Instance {{{{ $labels.instance }}}} down"
          description: "{{{{ $labels.instance }}}} has been down for more than {for_}."
"""


def seconds(d):
    return float(d[:-1]) * {"s": 1, "m": 60}[d[-1]] if d[-1] in "sm" else float(d)


class Hook(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Hook.got.append((time.monotonic(), json.loads(body)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--interval", default="1s", help="--monitor-interval")
    ap.add_argument("--for", dest="for_", default="2s", help="the rule's `for`")
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    a = ap.parse_args()
    if not os.path.exists(a.slipway):
        raise SystemExit(f"{a.slipway} is missing: cargo build --release -p slipway")
    env = tool_env(NO_COLOR="1")
    tmp = tempfile.mkdtemp(prefix="slipway-bench-notify-")
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    server = None
    try:
        project = os.path.join(tmp, "websvc")
        shutil.copytree(os.path.join(ROOT, "fixtures/go/websvc"), project)
        port = free_port()
        with open(os.path.join(project, ".slipway.yml"), "w") as f:
            f.write(PIPELINE.format(port=port))
        for args in (["init", "-q", "-b", "main"], ["add", "."], ["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "bench"]):
            subprocess.run(["git", *args], cwd=project, check=True, env=env)
        subprocess.run([a.slipway, "go", "build", "--version", "v1"], cwd=project, env=env, check=True, capture_output=True)
        with open(os.path.join(tmp, "rules.yml"), "w") as f:
            f.write(RULES.format(for_=a.for_))
        with open(os.path.join(tmp, "notify.yml"), "w") as f:
            f.write(
                "route:\n  receiver: team\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n"
                "  routes:\n    - matchers: ['event=~\".+\"']\n      receiver: none\n"
                f"receivers:\n  - name: team\n    webhook_configs:\n      - url: http://127.0.0.1:{hook.server_port}/hook\n  - name: none\n"
            )
        api = free_port()
        data = os.path.join(tmp, "data")
        server = subprocess.Popen(
            [a.slipway, "server", "--listen", f"127.0.0.1:{api}", "--with-agent", "--rules", os.path.join(tmp, "rules.yml"),
             "--notify", os.path.join(tmp, "notify.yml"), "--monitor-interval", a.interval],
            env=dict(env, SLIPWAY_DATA_DIR=data), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        token = None
        for line in server.stdout:
            if "admin token" in line:
                token = line.strip().rsplit(" ", 1)[1]
            if line.startswith("slipway server listening"):
                break
        url = f"http://127.0.0.1:{api}"

        def call(path, method="GET", body=None):
            req = urllib.request.Request(url + path, method=method, data=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")

        call("/api/v1/projects", "POST", json.dumps({"name": "bench", "repo": project}).encode())
        subprocess.run([a.slipway, "deploy", "web", "--artifacts", os.path.join(project, "dist"), "--server", url, "--token", token, "--project", "bench"],
                       env=env, check=True, capture_output=True)

        def pid():
            s = socket.socket(socket.AF_UNIX)
            s.connect(os.path.join(data, "agent.sock"))
            s.sendall(b"GET /v1/envs/web HTTP/1.0\r\nHost: agent\r\n\r\n")
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
            return json.loads(raw.split(b"\r\n\r\n", 1)[1])["groups"][0]["instances"][0]["pid"]

        def up():
            r = call("/api/v1/query?query=up%7Benvironment%3D%22web%22%7D")["data"]["result"]
            return r[0]["value"][1] if r else None

        def state():
            alerts = call("/api/v1/alerts")["data"]["alerts"]
            return next((x["state"] for x in alerts if x["labels"].get("alertname") == "InstanceDown"), "inactive")

        def wait(what, cond, limit=60):
            t = time.monotonic()
            while not cond():
                if time.monotonic() - t > limit:
                    raise SystemExit(f"timed out waiting for {what}")
                time.sleep(0.02)
            return time.monotonic()

        def told(status, since):
            return next((t for t, b in Hook.got if t >= since and b["status"] == status), None)

        wait("up == 1", lambda: up() == "1")
        rows = []
        for i in range(a.runs):
            p = pid()
            t0 = time.monotonic()
            os.kill(p, signal.SIGSTOP)
            t_up = wait("up == 0", lambda: up() == "0")
            t_fire = wait("firing", lambda: state() == "firing")
            t_told = wait("the notification", lambda: told("firing", t0) is not None)
            t_told = told("firing", t0)
            t_fire = min(t_fire, t_told)  # told before the poll saw it firing
            os.kill(p, signal.SIGCONT)
            t1 = time.monotonic()
            wait("up == 1", lambda: up() == "1")
            t_res = wait("the resolution", lambda: told("resolved", t1) is not None)
            t_res = told("resolved", t1)
            rows.append((t_up - t0, t_fire - t_up, t_told - t_fire, t_res - t1))
            print(f"run {i + 1}: up==0 {rows[-1][0]:.2f} s after the freeze; firing {rows[-1][1]:.2f} s later; "
                  f"told {rows[-1][2] * 1000:.0f} ms after firing; resolution told {rows[-1][3]:.2f} s after the thaw")
            time.sleep(1)
        med = [statistics.median(r[k] for r in rows) for k in range(4)]
        bound = seconds(a.for_) + seconds(a.interval)
        print(f"\nmedians over {a.runs} runs (--monitor-interval {a.interval}, for: {a.for_}):")
        print(f"  freeze -> up==0            {med[0]:.2f} s  (health checks every 200 ms, then the next collection)")
        print(f"  up==0 -> firing            {med[1]:.2f} s  (bound: for + one interval = {bound:.2f} s) {'ok' if max(r[1] for r in rows) <= bound + 0.1 else 'OVER'}")
        print(f"  firing -> webhook          {med[2] * 1000:.0f} ms (bound: 1000 ms) {'ok' if max(r[2] for r in rows) <= 1.0 else 'OVER'}")
        print(f"  thaw -> resolution told    {med[3]:.2f} s")
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)
        hook.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
