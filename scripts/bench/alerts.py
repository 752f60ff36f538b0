#!/usr/bin/env python3
"""scripts/bench/alerts.py — what evaluating alert rules costs: 1,000 rules (thresholds,
rates, aggregations, histogram quantiles) over 10,000 series, evaluated every minute for 30
minutes, as one promtool rule-test file run by `slipway alerts test` and by Debian's
`promtool test rules` on the same file. Both sides in one run, medians of the wall time and
peak RSS, the ratio printed. Release build: `cargo build --release -p slipway`.

    scripts/bench/alerts.py --runs 5 --rules 1000 --series 10000
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_SLIPWAY  # noqa: E402


def write_inputs(work, rules, series, steps):
    families = max(1, series // 100)  # 100 series per family: 10 jobs x 10 instances
    with open(os.path.join(work, "rules.yml"), "w") as f:
        f.write("groups:\n  - name: bench\n    rules:\n")
        for i in range(rules):
            fam = i % families
            kind = i % 4
            if kind == 0:
                expr = f"gauge_{fam} > {50 + i % 40}"
            elif kind == 1:
                expr = f"rate(counter_{fam}[5m]) > {1 + i % 3}"
            elif kind == 2:
                expr = f"sum by (job) (gauge_{fam}) > {4000 + i % 1000}"
            else:
                expr = f"avg by (job) (rate(counter_{fam}[5m])) / 10 > 0.2"
            f.write(f"      - alert: A{i}\n        expr: {expr}\n        for: 2m\n")
            f.write("        annotations:\n          v: '{{ $value }} on {{ $labels.instance }}'\n")
    with open(os.path.join(work, "test.yml"), "w") as f:
        f.write("rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n")
        n = 0
        for fam in range(families):
            for j in range(10):
                for k in range(10):
                    if n >= series:
                        break
                    name = "gauge" if n % 2 == 0 else "counter"
                    lab = f'{{job="j{j}", instance="i{k}"}}'
                    if name == "gauge":
                        f.write(f"      - series: 'gauge_{fam}{lab}'\n        values: '{(j * 7 + k) % 90}+1x{steps}'\n")
                    else:
                        f.write(f"      - series: 'counter_{fam}{lab}'\n        values: '0+{60 + k * 30}x{steps}'\n")
                    n += 1
        f.write(f"    alert_rule_test:\n      - eval_time: {steps}m\n        alertname: A0\n        exp_alerts: []\n")


def run(cmd, cwd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # promtool fails the deliberately empty expectation; slipway too: both evaluated everything.
    if "FAILED" not in p.stdout and p.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed: {p.stdout}\n{p.stderr}")
    return wall, max(rss, before)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--series", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--slipway", default=DEFAULT_SLIPWAY)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="slipway-bench-alerts-")
    try:
        write_inputs(work, args.rules, args.series, args.steps)
        sides = {
            "slipway alerts test": [args.slipway, "alerts", "test", "test.yml"],
            "promtool test rules": ["promtool", "test", "rules", "test.yml"],
        }
        results = {k: [] for k in sides}
        for _ in range(args.runs):
            for name, cmd in sides.items():
                results[name].append(run(cmd, work)[0])
        evals = args.rules * (args.steps + 1)
        print(f"{args.rules} rules x {args.series} series, {args.steps + 1} evaluations ({evals} rule evaluations)")
        for name, walls in results.items():
            med = statistics.median(walls)
            print(f"{name:22} median {med:7.2f} s  ({med / (args.steps + 1) * 1000:7.1f} ms per evaluation of all rules)")
        a, b = (statistics.median(v) for v in results.values())
        print(f"ratio promtool / slipway: {b / a:.2f}x")
        # Peak memory of one run each, measured alone.
        for name, cmd in sides.items():
            p = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=work, capture_output=True, text=True)
            print(f"{name:22} peak RSS {int(p.stderr.strip().splitlines()[-1]) / 1024:7.1f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
