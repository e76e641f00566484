"""The ``lmlab`` command: ``doctor``, ``check NOTEBOOK``, ``bench [NAME]``."""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["main"]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def doctor(_args) -> int:
    """Print versions, devices, threads and this machine's estimated peak."""
    import torch

    from lmlab import device

    print(f"python        {platform.python_version()} ({sys.executable})")
    for package in ("lmlab", "torch", "numpy", "matplotlib", "ipywidgets", "jupyter-book", "nbgrader"):
        print(f"{package:<13} {_version(package)}")
    info = device.cpu_info()
    hz = f"{info['hz'] / 1e9:.2f} GHz" if info["hz"] else "unknown clock"
    print(f"cpu           {info['model']}, {info['cores']} cores, {hz}, torch kernels: {info['torch_capability']}")
    llc = info["llc_bytes"]
    print(f"last cache    {llc / 2**20:.0f} MiB" if llc else "last cache    unknown")
    print(f"threads       torch uses {torch.get_num_threads()} (set with torch.set_num_threads)")
    peak = device.peak_flops("cpu")
    print(f"cpu peak      {peak.flops_per_s / 1e9:.0f} GFLOP/s fp32 (estimate: {peak.how})")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"cuda:{i}        {torch.cuda.get_device_name(i)}")
    else:
        print("cuda          none (the course runs on the CPU; chapters note what a GPU would change)")
    print(f"picked device {device.pick_device()}")
    return 0


def check(args) -> int:
    """Run a student's notebook and print each graded part's verdict."""
    from lmlab.selfcheck import (
        NotebookError,
        check_notebook,
        format_report,
        read_notebook,
        structure_problems,
    )

    if not Path(args.notebook).exists():
        print(f"lmlab check: notebook {args.notebook!r} does not exist", file=sys.stderr)
        return 2
    try:
        problems = structure_problems(read_notebook(Path(args.notebook)), Path(args.notebook))
        results, notes = check_notebook(args.notebook, timeout=args.timeout)
    except FileNotFoundError as err:
        print(f"lmlab check: {err}", file=sys.stderr)
        return 2
    except NotebookError as err:
        print(f"lmlab check: {err}", file=sys.stderr)
        return 2
    except IsADirectoryError:
        print(f"lmlab check: {args.notebook} is a folder; give the notebook (.ipynb) inside it",
              file=sys.stderr)
        return 2
    for problem in problems:
        print(f"lmlab check: problem: {problem}")
    if not results:
        print(f"lmlab check: {args.notebook} has no graded parts (is it an exercise notebook?)")
        return 2
    colour = None if not args.no_color else False
    print(format_report(args.notebook, results, notes, colour=colour))
    return 0 if all(r.passed for r in results) and not problems else 1


def bench(args) -> int:
    """Run the benchmarks in ``benchmarks/`` (from the repository root)."""
    root = Path.cwd()
    if not (root / "benchmarks" / "run.py").exists():
        root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "run.py").exists():
        print("lmlab bench: run it from the LLM Lab repository root (benchmarks/ not found)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    from benchmarks.run import main as run_benchmarks

    return run_benchmarks(args.names, quick=args.quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmlab", description="LLM Lab's command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="versions, devices, threads, estimated peak").set_defaults(fn=doctor)
    p = sub.add_parser("check", help="run an exercise notebook and report each graded part")
    p.add_argument("notebook")
    p.add_argument("--timeout", type=int, default=120, help="seconds per cell (default 120)")
    p.add_argument("--no-color", action="store_true", help="plain output even on a terminal")
    p.set_defaults(fn=check)
    p = sub.add_parser("bench", help="run benchmarks/ and write benchmarks/results.md")
    p.add_argument("names", nargs="*", help="benchmark names (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to see that they run")
    p.set_defaults(fn=bench)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
