#!/usr/bin/env python3
"""What the load generator costs, and how much load one generator can make.

1. cost: `sockloop bench` against the C reference server (100 connections, depth 1
   and 16), plain and with `--interval 1 --plot FILE.svg`, interleaved, in one run:
   the per-round ratio of messages per second (with / without), and its median;
   and the generator's CPU time (user + system) per message, which the steal and
   noise of a shared machine disturb far less than throughput. Per-interval
   histograms and the plot must not slow the generator.
2. headroom: one `sockloop bench` process against the C reference and against the
   tokio peer (the same options), with the CPU time each side used, and the
   workshop's own load generator against the tokio peer. Client and server each
   have a core of their own here; the side that needs more CPU per message is the
   limit. When bench needs less per message than tokio does, one bench process can
   drive more than tokio can serve.

Usage (from the project root, after ../shared/bench/build.sh and cargo build --release):

    benches/generator.py [--rounds 5] [--secs 5] [--bench ../shared/bench]
        [--sockloop target/release/sockloop]
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile


def start(cmd):
    """Starts a reference server on a free port; returns (process, port)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        m = re.match(r"listening tcp://127\.0\.0\.1:(\d+)", line)
        if m:
            return p, int(m.group(1))
    raise SystemExit(f"{cmd[0]} printed no listening line")


def stop(p):
    p.terminate()
    p.wait(timeout=10)


def bench(sockloop, port, shape, secs, extra=()):
    """One `sockloop bench --json` run of `shape` (conns, size, depth): its summary,
    and the CPU seconds it used."""
    conns, size, depth = shape
    cmd = [sockloop, "bench", f"tcp://127.0.0.1:{port}", "--conns", str(conns),
           "--size", str(size), "--depth", str(depth), "--secs", str(secs), "--json",
           *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    if summary["errors"]:
        raise SystemExit(f"errors in {cmd}: {summary}")
    return summary, cpu


def cpu_secs(pid):
    """A process's user + system CPU time so far, seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadgen(path, port, shape, secs):
    """One run of the workshop's load generator; messages per second."""
    conns, size, depth = shape
    out = subprocess.run(
        [path, "pingpong", "--addr", f"127.0.0.1:{port}", "--conns", str(conns),
         "--size", str(size), "--depth", str(depth), "--secs", str(secs)],
        capture_output=True, text=True, check=True)
    for line in reversed(out.stdout.strip().splitlines()):
        if line.startswith("{"):
            r = json.loads(line)
            return r["msgs_per_s"]
    raise SystemExit(f"loadgen printed no JSON: {out.stdout}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--bench", default="../shared/bench")
    ap.add_argument("--sockloop", default="target/release/sockloop")
    ap.add_argument("--only", choices=["cost", "headroom"])
    a = ap.parse_args()
    c_server = [os.path.join(a.bench, "target/c-epoll-echo"), "0", "-1"]
    tokio = [os.path.join(a.bench, "target/release/tokio-echo"), "0", "-1"]
    plot = os.path.join(tempfile.mkdtemp(), "cost.svg")

    if a.only in (None, "cost"):
        print(f"## cost of --interval 1 --plot: sockloop bench against C, 100 conns, "
              f"{a.secs:g} s, {a.rounds} rounds\n")
        print("| depth | round | plain msg/s | --interval 1 --plot msg/s | ratio "
              "| plain CPU ns/msg | --interval 1 --plot CPU ns/msg | ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for depth in (1, 16):
            ratios, cpu_ratios = [], []
            for r in range(a.rounds):
                server, port = start(c_server)
                try:
                    runs = {}
                    # Alternate which goes first, so that drift does not favour one.
                    order = ["plain", "plot"] if r % 2 == 0 else ["plot", "plain"]
                    for kind in order:
                        extra = ["--interval", "1", "--plot", plot] if kind == "plot" else []
                        runs[kind] = bench(a.sockloop, port, (100, 64, depth), a.secs, extra)
                finally:
                    stop(server)
                rate = {k: v[0]["msgs_per_sec"] for k, v in runs.items()}
                ns = {k: v[1] * 1e9 / max(v[0]["msgs"], 1) for k, v in runs.items()}
                ratio, cpu_ratio = rate["plot"] / rate["plain"], ns["plot"] / ns["plain"]
                ratios.append(ratio)
                cpu_ratios.append(cpu_ratio)
                print(f"| {depth} | {r + 1} | {rate['plain']:.0f} | {rate['plot']:.0f} | {ratio:.3f} "
                      f"| {ns['plain']:.0f} | {ns['plot']:.0f} | {cpu_ratio:.3f} |")
            print(f"| {depth} | **median** | | | **{statistics.median(ratios):.3f}** "
                  f"| | | **{statistics.median(cpu_ratios):.3f}** |")
        print()

    if a.only in (None, "headroom"):
        print(f"## one generator against C and tokio, {a.secs:g} s, {a.rounds} rounds "
              "(medians; CPU: share of one core over the window)\n")
        print("| load | server | sockloop bench msg/s | server CPU | bench CPU "
              "| server CPU ns/msg | bench CPU ns/msg | loadgen msg/s |")
        print("|---|---|---|---|---|---|---|---|")
        lg = os.path.join(a.bench, "target/release/loadgen")
        shapes = [("100 conns, 64 B, depth 1", (100, 64, 1)),
                  ("100 conns, 64 B, depth 16", (100, 64, 16)),
                  ("1 conn, 64 KiB, depth 4", (1, 65536, 4))]
        for label, shape in shapes:
            rows = {name: [] for name in ("c", "tokio")}
            lgs = []
            for _ in range(a.rounds):
                for name, cmd in (("c", c_server), ("tokio", tokio)):
                    server, port = start(cmd)
                    try:
                        before = cpu_secs(server.pid)
                        summary, bench_cpu = bench(a.sockloop, port, shape, a.secs)
                        server_cpu = cpu_secs(server.pid) - before
                        if name == "tokio":
                            lgs.append(loadgen(lg, port, shape, a.secs))
                    finally:
                        stop(server)
                    msgs = max(summary["msgs"], 1)
                    rows[name].append((summary["msgs_per_sec"], server_cpu / a.secs,
                                       bench_cpu / a.secs, server_cpu * 1e9 / msgs,
                                       bench_cpu * 1e9 / msgs))
            for name, r in rows.items():
                med = [statistics.median(col) for col in zip(*r)]
                extra = f"{statistics.median(lgs):.0f}" if name == "tokio" else ""
                print(f"| {label} | {name} | {med[0]:.0f} | {med[1]:.0%} | {med[2]:.0%} "
                      f"| {med[3]:.0f} | {med[4]:.0f} | {extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
