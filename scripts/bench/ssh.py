#!/usr/bin/env python3
"""scripts/bench/ssh.py — `slipway deploy` to two ssh + systemd hosts vs the brief's script.

Boots two Debian containers with systemd as PID 1 (scripts/systemd-image), each with sshd on
its own loopback port, and alternates, deploying the websvc fixture v1 ↔ v2:

  slipway   `slipway deploy` (target: ssh, max_unavailable 1): stage both hosts, then switch
            host by host with a health check — polled every 10 ms on both hosts to find the
            most hosts out of service at once
  script    the brief's way, per host: `scp` the binary, `ssh ... systemctl restart`, no checks
            (also polled)

Also times `slipway rollback` (no upload). Prints medians. Needs root, dockerd, a release
build of slipway, scripts/setup.
Usage: scripts/bench/ssh.py [--runs N]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

from common import DEFAULT_SLIPWAY, ROOT, free_port, tool_env
IMAGE = "slipway-test/debian-systemd:bookworm"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def answer(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return r.read().decode().strip()
    except Exception:
        return None


class Poller:
    def __init__(self, ports):
        self.ports, self.worst, self.stop = ports, 0, False
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        while not self.stop:
            self.worst = max(self.worst, sum(1 for p in self.ports if answer(p) is None))
            time.sleep(0.01)

    def done(self):
        self.stop = True
        self.t.join()
        return self.worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    args = ap.parse_args()
    env = tool_env(NO_COLOR="1")
    subprocess.run(["bash", os.path.join(ROOT, "scripts/systemd-image")], check=True)
    names = [f"slipway-bench-{os.getpid()}-{i}" for i in range(2)]
    with tempfile.TemporaryDirectory(prefix="slipway-sshbench-") as tmp:
        try:
            run(args, env, tmp, names)
        finally:
            for n in names:
                subprocess.run(["docker", "rm", "-f", n], capture_output=True)


def run(args, env, tmp, names):
    key = os.path.join(tmp, "id")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
    pub = open(key + ".pub").read().strip()
    ssh_ports, ports = [free_port(), free_port()], [free_port(), free_port()]
    for n in names:
        sh("docker", "run", "-d", "--name", n, "--network", "host", "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
           "--tmpfs", "/run", "--tmpfs", "/run/lock", "-e", "container=docker", "--security-opt", "seccomp=unconfined",
           "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_PTRACE", "--cap-add", "SYS_BOOT", IMAGE, "/sbin/init")
    for n, p in zip(names, ssh_ports):
        for _ in range(300):
            st = subprocess.run(["docker", "exec", n, "systemctl", "is-system-running"], capture_output=True, text=True).stdout.strip()
            if st in ("running", "degraded"):
                break
            time.sleep(0.1)
        sh("docker", "exec", n, "sh", "-c",
           f"ssh-keygen -A >/dev/null && mkdir -p /root/.ssh /run/sshd && printf '%s' '{pub}' > /root/.ssh/authorized_keys && "
           f"chmod 600 /root/.ssh/authorized_keys && /usr/sbin/sshd -p {p} -o ListenAddress=127.0.0.1")
    known = os.path.join(tmp, "known_hosts")
    with open(known, "w") as f:
        for p in ssh_ports:
            for _ in range(100):
                out = subprocess.run(["ssh-keyscan", "-p", str(p), "127.0.0.1"], capture_output=True, text=True).stdout
                if out:
                    f.write(out)
                    break
                time.sleep(0.1)
    project = os.path.join(tmp, "websvc")
    shutil.copytree(os.path.join(ROOT, "fixtures/go/websvc"), project)
    hosts = ", ".join(f'{{url: "ssh://root@127.0.0.1:{s}", port: {p}}}' for s, p in zip(ssh_ports, ports))
    with open(os.path.join(project, ".slipway.yml"), "w") as f:
        f.write(f"include:\n  - template: slipway/go.yml\nenvironments:\n  prod:\n    target: ssh\n    ssh:\n      hosts: [{hosts}]\n"
                f"      identity: {key}\n      known_hosts: {known}\n    health: {{http: /healthz, interval: 100ms, deadline: 10s}}\n")
    env = dict(env, SLIPWAY_DATA_DIR=os.path.join(tmp, "data"))
    builds = {}
    for v in ["v1", "v2"]:
        sh(args.slipway, "go", "build", "--version", v, cwd=project, env=env)
        builds[v] = os.path.join(tmp, "builds", v)
        shutil.copytree(os.path.join(project, "dist"), builds[v])
    sw = lambda *a: subprocess.run([args.slipway, *a], cwd=project, env=env, capture_output=True, text=True, check=True)
    sw("deploy", "prod", "--artifacts", builds["v1"])
    ssh_opts = ["-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}", "-i", key]

    def script_deploy(v):
        binary = os.path.join(builds[v], "websvc_linux_amd64")
        for s in ssh_ports:
            subprocess.run(["scp", "-q", *ssh_opts, "-P", str(s), binary, "root@127.0.0.1:/opt/slipway/websvc/current/websvc.new"], check=True)
            subprocess.run(["ssh", *ssh_opts, "-p", str(s), "root@127.0.0.1",
                            "mv -f /opt/slipway/websvc/current/websvc.new /opt/slipway/websvc/current/websvc && systemctl restart websvc"], check=True)

    t_sw, t_sc, w_sw, w_sc, t_rb = [], [], [], [], []
    version = "v1"
    for _ in range(args.runs):
        version = "v2" if version == "v1" else "v1"
        poll = Poller(ports)
        t = time.perf_counter()
        sw("deploy", "prod", "--artifacts", builds[version])
        t_sw.append(time.perf_counter() - t)
        w_sw.append(poll.done())
        poll = Poller(ports)
        t = time.perf_counter()
        script_deploy(version)
        t_sc.append(time.perf_counter() - t)
        time.sleep(0.5)
        w_sc.append(poll.done())
        t = time.perf_counter()
        sw("rollback", "prod")
        t_rb.append(time.perf_counter() - t)
        sw("deploy", "prod", "--artifacts", builds[version], "--force")
    med = statistics.median
    print(f"slipway deploy, 2 hosts (upload, checksum, unit, restart, health check): {med(t_sw):.2f} s median; "
          f"most hosts out of service at once: {max(w_sw)}")
    print(f"the brief's script (scp + systemctl restart per host, no checks):        {med(t_sc):.2f} s median; "
          f"most hosts out of service at once: {max(w_sc)}")
    print(f"slipway rollback (link switch + restart + health check, no upload):       {med(t_rb):.2f} s median")
    print(f"ratio script/slipway: {med(t_sc) / med(t_sw):.2f}×")


if __name__ == "__main__":
    main()
