#!/usr/bin/env python3
"""scripts/bench/signing.py — what signing adds to a build and verifying to a deploy.

Side by side in one run, alternating, each pair on the same inputs:

  go build       `slipway go build` vs `slipway go build --sign` (Go's cache warm: what is left
                 is slipway's part — opening the key, two signatures)
  image push     `slipway image build --push REF` vs the same with `--sign` (to a real
                 registry on loopback: the index and each platform signed and attached)
  deploy         a deploy (--force, same signed build) to an environment without and with
                 `require_signature` (the local agent, one instance)
  verify         `slipway image verify` and `slipway sign verify-blob` on their own
  sign a file    `slipway sign blob` vs `cosign sign-blob` with the same key (cosign from
                 scripts/setup): both open the key with scrypt N=32768

Prints medians and the difference. Needs: scripts/setup (Go, docker-registry), a release
build. Usage: scripts/bench/signing.py [--runs N] [--slipway PATH] [--json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from common import DEFAULT_SLIPWAY, ROOT, free_port, tool_env

PASS = "bench passphrase"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    env = tool_env(SLIPWAY_SIGNING_PASSWORD=PASS, NO_COLOR="1", SLIPWAY_USER="bench")
    with tempfile.TemporaryDirectory(prefix="slipway-signbench-") as tmp:
        env["SLIPWAY_DATA_DIR"] = os.path.join(tmp, "data")
        project = os.path.join(tmp, "websvc")
        shutil.copytree(os.path.join(ROOT, "fixtures/go/websvc"), project)

        def sw(*args, cwd=project):
            p = subprocess.run([a.slipway, *args], cwd=cwd, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"slipway {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
            return p

        def timed(*args):
            t = time.perf_counter()
            sw(*args)
            return time.perf_counter() - t

        sw("sign", "generate-key", "--output", os.path.join(tmp, "release"))
        key, pub = os.path.join(tmp, "release.key"), os.path.join(tmp, "release.pub")
        pem = "".join(f"          {line}\n" for line in open(pub).read().splitlines())
        plain, signed = free_port(), free_port()
        with open(os.path.join(project, ".slipway.yml"), "w") as f:
            f.write(
                "include:\n  - template: slipway/go.yml\nenvironments:\n"
                f"  plain:\n    listen: 127.0.0.1:{plain}\n    health: {{http: /healthz, interval: 100ms}}\n"
                f"  signed:\n    listen: 127.0.0.1:{signed}\n    health: {{http: /healthz, interval: 100ms}}\n"
                f"    require_signature:\n      keys:\n        - |\n{pem}"
            )
        for g in (["init", "-q", "-b", "main"], ["-c", "user.email=b@x", "-c", "user.name=b", "commit", "-q", "--allow-empty", "-m", "one"]):
            subprocess.run(["git", "-C", project, *g], check=True)
        subprocess.run(["git", "-C", project, "add", "."], check=True)
        subprocess.run(["git", "-C", project, "-c", "user.email=b@x", "-c", "user.name=b", "commit", "-qm", "two"], check=True)

        reg_dir = os.path.join(tmp, "registry")
        os.makedirs(reg_dir)
        reg = f"127.0.0.1:{free_port()}"
        with open(os.path.join(reg_dir, "config.yml"), "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {reg_dir}/data\nhttp:\n  addr: {reg}\n")
        registry = subprocess.Popen(["docker-registry", "serve", os.path.join(reg_dir, "config.yml")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sw("agent", "start")
        try:
            cosign = shutil.which("cosign", path=env["PATH"])
            times = {k: [] for k in ["go build", "go build --sign", "image push", "image push --sign",
                                      "deploy", "deploy (require_signature)", "image verify", "sign verify-blob"]
                     + (["sign blob", "cosign sign-blob (same key)"] if cosign else [])}
            ref = f"{reg}/bench/websvc:v1"
            sw("go", "build", "--version", "v1", "--sign", "--key", key)  # warm Go's cache
            sw("image", "build", "--push", ref, "--no-sbom", "--sign", "--key", key)
            build = os.path.join(tmp, "signed-build")
            shutil.copytree(os.path.join(project, "dist"), build)
            sw("deploy", "plain", "--artifacts", build)
            sw("deploy", "signed", "--artifacts", build)
            for _ in range(a.runs):
                times["go build"].append(timed("go", "build", "--version", "v1"))
                times["go build --sign"].append(timed("go", "build", "--version", "v1", "--sign", "--key", key))
                times["image push"].append(timed("image", "build", "--push", ref, "--no-sbom"))
                times["image push --sign"].append(timed("image", "build", "--push", ref, "--no-sbom", "--sign", "--key", key))
                times["deploy"].append(timed("deploy", "plain", "--artifacts", build, "--force"))
                times["deploy (require_signature)"].append(timed("deploy", "signed", "--artifacts", build, "--force"))
                times["image verify"].append(timed("image", "verify", "--key", pub, ref))
                times["sign verify-blob"].append(timed("sign", "verify-blob", "--key", pub, os.path.join(build, "SHA256SUMS")))
                if cosign:
                    sums = os.path.join(build, "SHA256SUMS")
                    times["sign blob"].append(timed("sign", "blob", "--key", key, sums))
                    t = time.perf_counter()
                    subprocess.run([cosign, "sign-blob", "--key", key, "--tlog-upload=false", "--output-signature",
                                    os.path.join(tmp, "cosign.sig"), sums], env=dict(env, COSIGN_PASSWORD=PASS),
                                   check=True, capture_output=True)
                    times["cosign sign-blob (same key)"].append(time.perf_counter() - t)
        finally:
            sw("agent", "stop")
            registry.kill()
            registry.wait()
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    added = {
        "signing a go build": med["go build --sign"] - med["go build"],
        "signing an image push (index + platform)": med["image push --sign"] - med["image push"],
        "verifying a deploy": med["deploy (require_signature)"] - med["deploy"],
    }
    if a.json:
        print(json.dumps({"runs": a.runs, "median_ms": med, "added_ms": added}))
        return
    print(f"{a.runs} runs each, alternating (medians)")
    for k, v in med.items():
        print(f"  {k:30} {v:8.1f} ms")
    for k, v in added.items():
        print(f"  added by {k:40} {v:+7.1f} ms")


if __name__ == "__main__":
    main()
