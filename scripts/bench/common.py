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
