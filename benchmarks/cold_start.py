"""Cold start of the CLI: wall time of `privatellm retrieve` and `privatellm --help`, each in a
fresh interpreter, for this tree and for a baseline measured in the same run.

    python benchmarks/cold_start.py [--runs 7] [--data-dir D]

The baseline is a copy of this tree's privatellm package with embeddings.py as it was before
issue 13 (--baseline-rev), which loaded the model through sentence-transformers (importing
scikit-learn, scipy and transformers' modelling code). Everything else (click, settings, Chroma,
BM25) is the same code, so the ratio is what loading only what the command uses saves. The runs
alternate baseline, current, so a neighbour's load falls on both alike; the medians are printed
with the ratio, for wall time and for CPU time (user + system: what a busy machine inflates
less). "Cold" means a new process each time; the OS file cache is warm.

Without --data-dir, the samples in ingest/ are ingested once into a temporary data directory.
Both variants must print the same passages with the same scores: the script checks it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How do I run Llama locally?"
BASELINE_REV = "e12dd71"  # the last commit whose embeddings.py ran sentence-transformers
CLI = "from privatellm.cli import main; main()"


def _run(args: list[str], pythonpath: Path | None = None) -> tuple[float, float, str]:
    """Returns the wall and CPU (user + system) seconds and the stdout of one `privatellm ARGS`
    in a fresh interpreter; the privatellm package comes from pythonpath if given, else from
    this tree."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),  # not the repository: its privatellm would come first
        env=env,
    )
    return time.perf_counter() - started, _children_cpu() - cpu, done.stdout


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _baseline_package(rev: str, into: Path) -> Path:
    """Returns a directory holding this tree's privatellm with embeddings.py as of rev."""
    shutil.copytree(
        ROOT / "privatellm", into / "privatellm", ignore=shutil.ignore_patterns("*.pyc")
    )
    old = subprocess.run(
        ["git", "show", f"{rev}:privatellm/embeddings.py"],
        capture_output=True,
        check=True,
        cwd=ROOT,
    ).stdout
    (into / "privatellm" / "embeddings.py").write_bytes(old)
    return into


def _compare(label: str, args: list[str], runs: int, baseline: Path) -> None:
    walls: dict[str, list[float]] = {"baseline": [], "current": []}
    cpus: dict[str, list[float]] = {"baseline": [], "current": []}
    outputs: dict[str, set[str]] = {"baseline": set(), "current": set()}
    for _ in range(runs):
        for name, pythonpath in (("baseline", baseline), ("current", None)):
            wall, cpu, stdout = _run(args, pythonpath)
            walls[name].append(wall)
            cpus[name].append(cpu)
            outputs[name].add(stdout)
    if outputs["baseline"] != outputs["current"] or len(outputs["current"]) != 1:
        sys.exit(f"{label}: the baseline and this tree printed different results")
    for kind, seconds in (("wall", walls), ("cpu", cpus)):
        before, after = (statistics.median(seconds[name]) for name in ("baseline", "current"))
        current = seconds["current"]
        print(
            f"{label:8} {kind:4} baseline {before:5.2f} s  current {after:5.2f} s  "
            f"ratio {before / after:4.2f}x  (median of {runs}; current {min(current):.2f}"
            f"-{max(current):.2f} s)"
        )


def _cpu() -> str:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each variant (median)")
    parser.add_argument("--data-dir", type=Path, help="an ingested data dir (default: ingest/)")
    parser.add_argument(
        "--baseline-rev", default=BASELINE_REV, help="embeddings.py of the baseline"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _baseline_package(options.baseline_rev, Path(tmp))
        data_dir = options.data_dir or Path(tmp) / "data"
        if options.data_dir is None:
            _run(["--data-dir", str(data_dir), "ingest", str(ROOT / "ingest")])
        cores = len(os.sched_getaffinity(0))
        print(f"{_cpu()}, {cores} cores, Python {platform.python_version()}")
        retrieve = ["--data-dir", str(data_dir), "retrieve", "--json", QUESTION]
        _compare("retrieve", retrieve, options.runs, baseline)
        _compare("--help", ["--help"], options.runs, baseline)


if __name__ == "__main__":
    main()
