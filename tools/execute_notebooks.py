"""Re-execute notebooks in place and store their outputs and widget state (make notebooks).

    python -m tools.execute_notebooks book                 # every book notebook
    python -m tools.execute_notebooks book/ch01_chips/01_flops.ipynb

Each notebook runs in a fresh kernel from its own folder; the time it took is printed so
the 2-minute budget per notebook (DESIGN §6) is visible.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def notebooks(args: list[str]) -> list[Path]:
    found = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


def execute(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,
    )
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str]) -> int:
    # Same settings as `make test` (tools/run_tests.sh), so nbval sees the same outputs.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ.setdefault("LMLAB_CACHE", str(Path(".lmlab-cache").resolve()))
    paths = notebooks(argv or ["book"])
    total = 0.0
    for path in paths:
        seconds = execute(path)
        total += seconds
        flag = "  <-- over the 2-minute budget" if seconds > 120 else ""
        print(f"{seconds:7.1f} s  {path}{flag}", flush=True)
    print(f"{total:7.1f} s  total for {len(paths)} notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
