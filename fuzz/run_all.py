"""Run every harness (or the named ones) for a bounded number of executions, one at a time.

    python fuzz/run_all.py                      # 1,000,000 executions each, 2048 MB RSS cap
    python fuzz/run_all.py --runs 20000 packet  # a quick pass over one harness
    python fuzz/run_all.py --runs 100000 -- -max_len=8192   # extra libFuzzer flags after --

Each harness runs as its own process under libFuzzer's flags ``-runs=N``, ``-rss_limit_mb``,
``-timeout`` (seconds one input may take) and ``-print_final_stats=1``, with a corpus kept in
``fuzz/out/<harness>/corpus`` (seeded from the harness's ``seeds()`` when empty) and crash,
timeout and out-of-memory inputs written to ``fuzz/out/<harness>/``.  The output directory is
not tracked (``fuzz/.gitignore``).

Printed per harness, and written to ``fuzz/out/summary.json``: executions, wall time, exec/s,
peak RSS (the child's ``ru_maxrss``) and findings (the artifact files libFuzzer wrote).  The
exit status is 1 if any harness had a finding.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = ("packet", "stream", "envelope", "rpc", "snapshot", "keyring", "config")
ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


def _stat(log: str, name: str) -> int | None:
    m = re.search(rf"stat::{name}:\s*(\d+)", log)
    return int(m.group(1)) if m else None


def run_one(
    name: str, runs: int, rss_limit_mb: int, timeout: int, out: Path, extra: list[str]
) -> dict[str, object]:
    work = out / name
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in work.iterdir()}
    cmd = [
        sys.executable,
        str(HERE / f"fuzz_{name}.py"),
        f"-runs={runs}",
        f"-rss_limit_mb={rss_limit_mb}",
        f"-timeout={timeout}",
        "-print_final_stats=1",
        f"-artifact_prefix={work}{os.sep}",
        *extra,
        str(corpus),
    ]
    log_path = work / "log.txt"
    start = time.monotonic()
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, cwd=HERE, stdout=log_file, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    log = log_path.read_text(errors="replace")
    executed = _stat(log, "number_of_executed_units")
    findings = sorted(
        p.name
        for p in work.iterdir()
        if p.name not in before and p.name.startswith(ARTIFACT_PREFIXES)
    )
    return {
        "harness": name,
        "executions": executed,
        "wall_s": round(wall, 1),
        "exec_per_s": round(executed / wall) if executed and wall > 0 else None,
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # Linux: KiB
        "libfuzzer_peak_rss_mb": _stat(log, "peak_rss_mb"),
        "corpus": sum(1 for _ in corpus.iterdir()),
        "exit": proc.returncode,
        "findings": findings,
        "log": str(log_path),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("harness", nargs="*", help=f"any of {', '.join(HARNESSES)} (default: all)")
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--rss-limit-mb", type=int, default=2048)
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    extra = argv[cut + 1 :]  # libFuzzer flags, passed through
    names = args.harness or list(HARNESSES)
    unknown = sorted(set(names) - set(HARNESSES))
    if unknown:
        ap.error(f"unknown harness {', '.join(unknown)}; choose from {', '.join(HARNESSES)}")
    results = []
    print(f"{'harness':10} {'execs':>10} {'wall s':>8} {'exec/s':>8} {'RSS MB':>7}  findings")
    for name in names:
        r = run_one(name, args.runs, args.rss_limit_mb, args.timeout, args.out, extra)
        results.append(r)
        found = ", ".join(r["findings"]) or ("none" if r["exit"] == 0 else f"exit {r['exit']}")  # type: ignore[arg-type]
        print(
            f"{name:10} {r['executions'] or 0:>10} {r['wall_s']:>8} {r['exec_per_s'] or 0:>8} "
            f"{r['peak_rss_mb']:>7}  {found}",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["findings"] or r["exit"] != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
