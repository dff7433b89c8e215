"""Runs the lecture notebooks top to bottom and keeps their `.ipynb` copies in step with the sources.

The notebooks' source of truth is the jupytext percent-format `.py` beside each `.ipynb` (diff-friendly);
the `.ipynb` is the same notebook without outputs, for Jupyter and Colab users. Usage:

    python notebooks/execute.py                 # run every notebook -> artifacts/notebooks/*.ipynb
    python notebooks/execute.py --small 01_seq2seq   # the test suite's small setting, one notebook
    python notebooks/execute.py --sync          # rewrite notebooks/*.ipynb from the .py sources
    python notebooks/execute.py --check         # exit 1 if an .ipynb is stale or holds outputs

`make notebooks` runs the first; `make test` runs every notebook with `--small` (NOTEBOOK_SMALL=1: less
data, fewer epochs, the same code) and the check.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS_DIR = Path(__file__).resolve().parent
ROOT = NOTEBOOKS_DIR.parent
DEFAULT_OUT = ROOT / "artifacts" / "notebooks"


def sources() -> list[Path]:
    """The notebooks' `.py` sources, in lecture order."""
    return sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))


def _stripped(source: Path) -> nbformat.NotebookNode:
    notebook = jupytext.read(source)
    notebook.metadata.pop("jupytext", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return notebook


def sync(paths: list[Path]) -> list[Path]:
    """Writes each source's `.ipynb` twin (no outputs); returns the files written."""
    written = []
    for source in paths:
        target = source.with_suffix(".ipynb")
        nbformat.write(_stripped(source), target)
        written.append(target)
    return written


def stale(paths: list[Path]) -> list[str]:
    """One line per `.ipynb` that is missing, differs from its source, or carries outputs."""
    problems = []
    for source in paths:
        twin = source.with_suffix(".ipynb")
        if not twin.is_file():
            problems.append(f"{twin.name} is missing; run python notebooks/execute.py --sync")
            continue
        committed = nbformat.read(twin, as_version=4)
        if any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in committed.cells):
            problems.append(f"{twin.name} holds outputs; run python notebooks/execute.py --sync")
        elif [(c.cell_type, c.source) for c in committed.cells] != \
                [(c.cell_type, c.source) for c in _stripped(source).cells]:
            problems.append(f"{twin.name} differs from {source.name}; run python notebooks/execute.py --sync")
    return problems


def execute(source: Path, out_dir: Path = DEFAULT_OUT, small: bool = False, timeout: int = 900) -> Path:
    """Runs `source` top to bottom in a fresh kernel (working directory: the repository root) and writes
    the executed notebook, outputs and pictures included, to `out_dir`.

    Raises:
        CellExecutionError: naming the failing cell, when any cell raises (an assertion included).
    """
    notebook = jupytext.read(source)
    if small:
        os.environ["NOTEBOOK_SMALL"] = "1"
    else:
        os.environ.pop("NOTEBOOK_SMALL", None)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / source.with_suffix(".ipynb").name
    try:
        client.execute()
    finally:
        nbformat.write(notebook, target)  # a failed run is kept too, up to the failing cell
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python notebooks/execute.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to run, e.g. 01_seq2seq (default: all)")
    parser.add_argument("--small", action="store_true", help="the test suite's small setting")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the executed copies")
    parser.add_argument("--sync", action="store_true", help="rewrite the .ipynb twins from the .py sources")
    parser.add_argument("--check", action="store_true", help="fail if an .ipynb twin is stale")
    args = parser.parse_args(argv)
    paths = sources()
    if args.names:
        known = {p.stem: p for p in paths}
        unknown = [n for n in args.names if n.removesuffix(".py") not in known]
        if unknown:
            print(f"error: no notebook {', '.join(unknown)}; choose from {', '.join(known)}", file=sys.stderr)
            return 2
        paths = [known[n.removesuffix(".py")] for n in args.names]
    if args.sync:
        for path in sync(paths):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if args.check:
        problems = stale(paths)
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 1 if problems else 0
    for source in paths:
        started = time.perf_counter()
        try:
            target = execute(source, args.out, small=args.small)
        except CellExecutionError as e:
            print(f"error: {source.name} failed; see {args.out / source.with_suffix('.ipynb').name}\n{e}",
                  file=sys.stderr)
            return 1
        shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target  # --out may be elsewhere
        print(f"{source.name}: ran in {time.perf_counter() - started:.0f} s -> {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
