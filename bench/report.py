#!/usr/bin/env python3
"""Run every benchmark, then write one table (and a chart) of kvmd vs libvirt vs bare QEMU.

    bench/report.py [--out DIR] [--only NAME ...] [--from-logs]

Runs, one after the other (each in its own process, each cleaning up after itself):

  start_latency     bench/start_latency.py --runs 10      one VM: bare QEMU, kvmd, libvirt
  stats             bench/stats.py --vms 100              vm.stats vs getAllDomainStats
  recovery          bench/recovery.py --vms 100           re-attach after kill -9 of kvmd
  migration         bench/migration.py --runs 3           the real guest between two kvmds
  concurrent_start  bench/concurrent_start.py --vms 20    20 VMs at once: kvmd vs libvirt
  rss               bench/rss.py --vms 100                kvmd's RSS with 100 idle VMs
  vdsm_allstats     bench/vdsm_allstats.py --vms 20       Host.getAllVmStats on each backend

and parses the LAST line each prints (`key=value` pairs). First it compiles the project's
bytecode (`compileall`, as an install does: see compile_bytecode). Before each one it waits (at
most 45 s) for the host's 1-minute load average to come below the CPU count, and records
the load it started at. The whole run takes about 11 minutes on 2 CPUs. Output, in DIR (default
build/bench):

  report.md     one Markdown table: metric, kvmd, libvirt, bare QEMU, ratio, goal, met?
                (the same table is printed at the end)
  report.png    a bar chart of the ratios and of each figure against its goal
  results.json  every parsed figure, with the date and load
  NAME.log      each benchmark's full output

`--from-logs` rebuilds the table and chart from the NAME.log files of an earlier run
without running anything. The exit status is 1 if a benchmark failed (its row says so),
else 0 — a goal that is not met is reported, not an error. Ctrl-C stops the running
benchmark (which cleans up) and then this script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (script, arguments); sized so the whole run stays around 10 minutes on 2 CPUs
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "start_latency": ("start_latency.py", ["--runs", "10"]),
    "stats": ("stats.py", ["--vms", "100"]),
    "recovery": ("recovery.py", ["--vms", "100"]),
    "migration": ("migration.py", ["--runs", "3"]),
    "concurrent_start": ("concurrent_start.py", ["--vms", "20"]),
    "rss": ("rss.py", ["--vms", "100"]),
    "vdsm_allstats": ("vdsm_allstats.py", ["--vms", "20"]),
}


def last_line_pairs(text: str) -> dict[str, str]:
    """`key=value` pairs of the last non-empty line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return {}
    return dict(re.findall(r"(\S+?)=(\S+)", lines[-1]))


def num(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "na", "") else None
    except ValueError:
        return None


def wait_for_load(limit: float = 45.0) -> float:
    """Wait until the 1-minute loadavg is below the CPU count (at most `limit` s); return it."""
    target = float(os.cpu_count() or 1)
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] > target and time.monotonic() < deadline:
        time.sleep(2)
    return os.getloadavg()[0]


def compile_bytecode(python: str) -> None:
    """Write the project's .pyc files, as `pip install` does for a deployed kvmd.

    With PYTHONDONTWRITEBYTECODE set (as in this environment) nothing ever writes them, and
    every kvmd start would compile its ~45 modules from source first: ~80 ms of CPU (0.20 s
    instead of 0.12 s to import kvmd.daemon), which the re-attach and start figures would
    carry. The files go to the usual (git-ignored) __pycache__ folders.
    """
    subprocess.run([python, "-m", "compileall", "-q", "kvmd", "compat", "vdsm", "hooks", "tests/support"],
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def run_one(name: str, out_dir: str, python: str) -> dict:
    script, args = BENCHMARKS[name]
    argv = [python, os.path.join(ROOT, "bench", script), *args]
    if name == "start_latency":
        argv += ["--json", os.path.join(out_dir, "start_latency.json")]
    load = wait_for_load()
    print(f"== {name}: {' '.join(argv[1:])}  (loadavg {load:.2f})", flush=True)
    log_path = os.path.join(out_dir, f"{name}.log")
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        log.write(f"# {' '.join(argv)}\n# started {datetime.datetime.now().isoformat(timespec='seconds')}, "
                  f"loadavg {load:.2f}\n")
        log.flush()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        out = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.append(line)
                log.write(line)
                log.flush()
                print(f"   {line}", end="", flush=True)
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # the benchmark cleans up on it
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    secs = time.monotonic() - t0
    pairs = last_line_pairs("".join(out)) if rc == 0 else {}
    print(f"   -> {name}: {'exit ' + str(rc) if rc else ' '.join(f'{k}={v}' for k, v in pairs.items())} "
          f"in {secs:.0f}s", flush=True)
    return {"name": name, "rc": rc, "seconds": round(secs, 1), "loadavg": round(load, 2), "figures": pairs}


def from_log(name: str, out_dir: str) -> dict:
    path = os.path.join(out_dir, f"{name}.log")
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return {"name": name, "rc": None, "figures": {}}
    m = re.search(r"loadavg (\d+\.\d+)", text)
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("# "))
    return {"name": name, "rc": 0, "loadavg": float(m.group(1)) if m else None,
            "figures": last_line_pairs(body)}


# -- the table -------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def start_medians(out_dir: str) -> dict[str, float]:
    try:
        with open(os.path.join(out_dir, "start_latency.json")) as f:
            stats = json.load(f)["stats"]
        return {k: v["median"] * 1000 for k, v in stats.items()}
    except (OSError, KeyError, ValueError):
        return {}


def rows(results: dict[str, dict], out_dir: str) -> list[dict]:
    """One dict per table row: metric, kvmd, libvirt, bare, ratio (text), ratio_value, kind,
    goal, met (True/False/None)."""
    out: list[dict] = []

    def failed(name: str, metric: str) -> bool:
        r = results.get(name)
        if r is None:
            return True  # not run (--only)
        if r["rc"] != 0 or not r["figures"]:
            out.append({"metric": metric, "kvmd": "failed", "libvirt": "", "bare": "", "ratio": "",
                        "goal": "", "met": None, "note": f"see {name}.log"})
            return True
        return False

    if not failed("start_latency", "start of one VM, ms"):
        f = results["start_latency"]["figures"]
        med = start_medians(out_dir)
        r1, r2 = num(f.get("kvmd_over_bare")), num(f.get("libvirt_over_kvmd"))
        out.append({"metric": "start of one VM, ms (median of 10)", "kvmd": fmt(med.get("kvmd"), 1),
                    "libvirt": fmt(med.get("libvirt"), 1), "bare": fmt(med.get("bare"), 1),
                    "ratio": f"kvmd/bare {fmt(r1, 2)}", "ratio_value": r1, "kind": "goal", "goal_value": 1.5,
                    "chart": "start: kvmd / bare QEMU", "goal": "kvmd/bare ≤ 1.5",
                    "met": None if r1 is None else r1 <= 1.5})
        out.append({"metric": "start of one VM vs libvirt", "kvmd": "", "libvirt": "", "bare": "",
                    "ratio": f"libvirt/kvmd {fmt(r2, 2)}", "ratio_value": r2, "kind": "speedup",
                    "chart": "start (1 VM)", "goal": "> 1", "met": None if r2 is None else r2 > 1})
    if not failed("concurrent_start", "20 VMs started at once, ms"):
        f = results["concurrent_start"]["figures"]
        k, lv = num(f.get("kvmd")), num(f.get("libvirt"))
        r = lv / k if k and lv else None
        out.append({"metric": f"{f.get('vms', '?')} VMs started at once, ms (median of 3)",
                    "kvmd": fmt(k), "libvirt": fmt(lv), "bare": "–", "ratio": f"libvirt/kvmd {fmt(r, 2)}",
                    "ratio_value": r, "kind": "speedup", "chart": f"{f.get('vms', '?')} starts at once",
                    "goal": "> 1", "met": None if r is None else r > 1})
    if not failed("stats", "stats of 100 VMs, ms"):
        f = results["stats"]["figures"]
        k, lv = num(f.get("stats_all_ms")), num(f.get("libvirt_all_ms"))
        r = lv / k if k and lv else None
        n = f.get("vms", "?")
        out.append({"metric": f"stats of {n} VMs in one call, ms (median of 10)", "kvmd": fmt(k, 1),
                    "libvirt": fmt(lv, 1), "bare": "–", "ratio": f"libvirt/kvmd {fmt(r, 2)}",
                    "ratio_value": r, "kind": "speedup", "chart": f"stats, {n} VMs",
                    "goal": "kvmd ≤ 100, ratio > 1",
                    "met": None if k is None else (k <= 100 and (r is None or r > 1)),
                    "goal_fraction": (k / 100 if k is not None else None, f"stats {n} VMs / 100 ms")})
    if not failed("vdsm_allstats", "VDSM Host.getAllVmStats, ms"):
        f = results["vdsm_allstats"]["figures"]
        k, lv = num(f.get("kvmd")), num(f.get("libvirt"))
        r = lv / k if k and lv else None
        n = f.get("vms", "?")
        out.append({"metric": f"VDSM Host.getAllVmStats, {n} VMs, ms (median of 10)", "kvmd": fmt(k, 1),
                    "libvirt": fmt(lv, 1), "bare": "–", "ratio": f"libvirt/kvmd {fmt(r, 2)}",
                    "ratio_value": r, "kind": "speedup", "chart": f"VDSM getAllVmStats, {n} VMs",
                    "goal": "> 1", "met": None if r is None else r > 1})
    if not failed("recovery", "re-attach after kill -9, ms"):
        f = results["recovery"]["figures"]
        k = num(f.get("reattach_ms"))
        n = f.get("vms", "?")
        out.append({"metric": f"re-attach of {n} VMs after kill -9 of kvmd, ms", "kvmd": fmt(k),
                    "libvirt": "–", "bare": "–", "ratio": "–", "goal": "≤ 1000",
                    "met": None if k is None else k <= 1000,
                    "goal_fraction": (k / 1000 if k is not None else None, f"re-attach {n} VMs / 1 s")})
    if not failed("rss", "kvmd RSS, MiB"):
        f = results["rss"]["figures"]
        k = num(f.get("kvmd_rss_mib"))
        n = f.get("vms", "?")
        out.append({"metric": f"kvmd RSS with {n} idle VMs, MiB", "kvmd": fmt(k, 1), "libvirt": "–",
                    "bare": "–", "ratio": "–", "goal": "≤ 60", "met": None if k is None else k <= 60,
                    "goal_fraction": (k / 60 if k is not None else None, f"RSS {n} VMs / 60 MiB")})
    if not failed("migration", "live migration, ms"):
        f = results["migration"]["figures"]
        out.append({"metric": "live migration of the 256 MiB test guest, ms (downtime)",
                    "kvmd": f"{f.get('migrate_ms', '?')} ({f.get('downtime_ms', '?')})", "libvirt": "–",
                    "bare": "–", "ratio": "–", "goal": "–", "met": None})
    return out


def markdown(table: list[dict], header: str) -> str:
    lines = [header, "",
             "| metric | kvmd | libvirt | bare QEMU | ratio | goal | met? |",
             "|---|---:|---:|---:|---|---|:---:|"]
    for r in table:
        met = {True: "yes", False: "**no**", None: "–"}[r["met"]]
        if r.get("note"):
            met = r["note"]
        lines.append(f"| {r['metric']} | {r['kvmd']} | {r['libvirt']} | {r['bare']} | {r['ratio']} "
                     f"| {r['goal']} | {met} |")
    return "\n".join(lines) + "\n"


def chart(table: list[dict], path: str, title: str) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - matplotlib.ticker.* below

    speed = [(r["chart"], r["ratio_value"]) for r in table if r.get("kind") == "speedup" and r.get("ratio_value")]
    goals = [(r["chart"], r["ratio_value"] / r["goal_value"]) for r in table
             if r.get("kind") == "goal" and r.get("ratio_value")]
    goals += [(r["goal_fraction"][1], r["goal_fraction"][0]) for r in table
              if r.get("goal_fraction") and r["goal_fraction"][0] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    if speed:
        labels, values = zip(*speed, strict=True)
        bars = ax.barh(labels, values, color=["tab:green" if v > 1 else "tab:red" for v in values])
        ax.axvline(1, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(0.5, max(2.0, max(values) * 2))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.bar_label(bars, labels=[f"{v:.1f}×" for v in values], padding=3)
        ax.invert_yaxis()
    ax.set_title("libvirt time / kvmd time (> 1: kvmd faster)")
    ax = axes[1]
    if goals:
        labels, values = zip(*goals, strict=True)
        bars = ax.barh(labels, values, color=["tab:green" if v <= 1 else "tab:red" for v in values])
        ax.axvline(1, color="black", linewidth=1)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3)
        ax.set_xlim(0, max(1.2, max(values) * 1.25))
        ax.invert_yaxis()
    ax.set_title("kvmd figure / its goal (≤ 1: goal met)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "build", "bench"), help="output folder (default build/bench)")
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    p.add_argument("--from-logs", action="store_true", help="rebuild the report from the logs in --out")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    started = datetime.datetime.now()
    load_before = os.getloadavg()
    names = args.only or list(BENCHMARKS)
    results: dict[str, dict] = {}
    if not args.from_logs:
        compile_bytecode(sys.executable)
    try:
        for name in names:
            results[name] = from_log(name, args.out) if args.from_logs else run_one(name, args.out, sys.executable)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    load_after = os.getloadavg()
    loads = [r["loadavg"] for r in results.values() if r.get("loadavg") is not None]
    header = (f"kvmd benchmarks, {started:%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, TCG; "
              f"1-min loadavg {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end"
              + (f", {min(loads):.2f}–{max(loads):.2f} as each benchmark started" if loads else "")
              + ("" if args.from_logs else
                 f"; took {(datetime.datetime.now() - started).total_seconds() / 60:.1f} min"))
    table = rows(results, args.out)
    md = markdown(table, header)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"date": started.isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                   "loadavg": {"start": load_before, "end": load_after}, "results": results}, f, indent=1)
        f.write("\n")
    note = chart(table, os.path.join(args.out, "report.png"), header.split(";")[0])
    print()
    print(md)
    print(f"written: {os.path.join(args.out, 'report.md')}, "
          + (note or os.path.join(args.out, "report.png")) + f", {os.path.join(args.out, 'results.json')}")
    return 1 if any(r.get("rc") not in (0,) for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
