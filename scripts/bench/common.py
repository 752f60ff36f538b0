"""scripts/bench/common.py — what every benchmark script shares: the repository root, the
release binary's default path, the environment with the project's Go toolchain, a free port."""

import os
import socket

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SLIPWAY = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "slipway")
# The load generator the deploy benchmark drives (`cargo build --release -p slipway-testkit`).
DEFAULT_LOAD = os.path.join(os.path.dirname(DEFAULT_SLIPWAY), "slipway-load")


def tool_env(**extra):
    """os.environ with .tools/bin first on PATH, Go offline and local, a shared GOCACHE."""
    tools = os.path.join(ROOT, ".tools")
    env = dict(os.environ, PATH=os.path.join(tools, "bin") + os.pathsep + os.environ["PATH"], GOTOOLCHAIN="local", GOPROXY="off", **extra)
    env.setdefault("GOCACHE", os.path.join(tools, "go-cache"))
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_repo(path, files):
    """A git repository at `path` with `files` ({name: text}) in one commit on `main`."""
    import subprocess

    os.makedirs(path)
    for a in (["init", "-q", "-b", "main"], ["config", "user.email", "b@x"], ["config", "user.name", "b"]):
        subprocess.run(["git", "-C", path, *a], check=True)
    for name, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    subprocess.run(["git", "-C", path, "add", "."], check=True)
    subprocess.run(["git", "-C", path, "commit", "-qm", "one"], check=True)
    return path


def websvc_repo(path, web_port):
    """The websvc fixture as a git repository at `path` (one commit on `main`), its pipeline
    file declaring the environment `web` on 127.0.0.1:web_port."""
    import shutil
    import subprocess

    shutil.copytree(os.path.join(ROOT, "fixtures/go/websvc"), path)
    with open(os.path.join(path, ".slipway.yml"), "w") as f:
        f.write(f"build:\n  script: [echo hi]\nenvironments:\n  web:\n    listen: 127.0.0.1:{web_port}\n"
                "    health: {http: /healthz, interval: 200ms, deadline: 20s}\n")
    for a in (["init", "-q", "-b", "main"], ["config", "user.email", "b@x"], ["config", "user.name", "b"],
              ["add", "."], ["commit", "-qm", "one"]):
        subprocess.run(["git", "-C", path, *a], check=True)
    return path


def start_server(slipway, data_dir, port, *args):
    """`slipway server` on 127.0.0.1:port: (the process, the admin token it printed once)."""
    import subprocess

    server = subprocess.Popen(
        [slipway, "server", "--listen", f"127.0.0.1:{port}", *args],
        env=dict(os.environ, SLIPWAY_DATA_DIR=data_dir, NO_COLOR="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    admin = None
    for line in server.stdout:
        if line.startswith("admin token"):
            admin = line.rsplit(" ", 1)[1].strip()
        if line.startswith("slipway server listening"):
            break
    return server, admin
