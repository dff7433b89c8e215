"""The notebooks outside this repository (Colab): their first code cell installs the project when it is not
importable, and a notebook runs in a fresh environment where that cell installed it."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
VARIABLE = "KERAS_NLP_WEEK4_SOURCE"


def first_code_cell(path: Path) -> str:
    notebook = jupytext.read(path) if path.suffix == ".py" else nbformat.read(path, as_version=4)
    return next(c.source for c in notebook.cells if c.cell_type == "code")


INSTALL_CELL = first_code_cell(NOTEBOOKS[0])


def test_every_notebook_begins_with_the_same_install_cell():
    cells = {p.name: first_code_cell(p) for p in NOTEBOOKS}
    cells.update({p.with_suffix(".ipynb").name: first_code_cell(p.with_suffix(".ipynb")) for p in NOTEBOOKS})
    assert len(cells) == 2 * len(NOTEBOOKS) >= 10
    differing = [name for name, cell in cells.items() if cell != INSTALL_CELL]
    assert not differing, f"the install cell differs in {differing}; copy the first code cell of {NOTEBOOKS[0].name}"
    assert 'find_spec("keras_nlp_week4") is None' in INSTALL_CELL and VARIABLE in INSTALL_CELL


class _Pip:
    """Stands in for subprocess.run in the cell: records the pip command instead of running it."""

    def __init__(self):
        self.calls = []

    def __call__(self, command, **kwargs):
        self.calls.append(command)
        return subprocess.CompletedProcess(command, 0)


def _run_cell(monkeypatch, importable: bool) -> _Pip:
    pip = _Pip()
    monkeypatch.setattr(subprocess, "run", pip)
    if not importable:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "keras_nlp_week4" else real(name, *a))
    exec(compile(INSTALL_CELL, "install-cell", "exec"), {"__name__": "__main__"})
    return pip


def test_the_install_cell_does_nothing_where_the_project_imports(monkeypatch, capsys):
    assert _run_cell(monkeypatch, importable=True).calls == []
    assert capsys.readouterr().out == ""


def test_the_install_cell_installs_from_the_variable_else_from_the_clone_it_is_in(monkeypatch, tmp_path):
    monkeypatch.setenv(VARIABLE, "/somewhere/keras-nlp-week4.zip")
    monkeypatch.chdir(tmp_path)
    [command] = _run_cell(monkeypatch, importable=False).calls
    assert command == [sys.executable, "-m", "pip", "install", "-q", "/somewhere/keras-nlp-week4.zip"]
    # No variable: the clone the notebook runs in (Jupyter's working directory is the notebook's folder).
    monkeypatch.delenv(VARIABLE)
    monkeypatch.chdir(ROOT / "notebooks")
    [command] = _run_cell(monkeypatch, importable=False).calls
    assert command[-1] == str(ROOT)
    # ... or one beside the working directory, as Colab's /content/keras-nlp-week4 is beside /content/x.
    clone = tmp_path / "keras-nlp-week4-main"
    clone.mkdir()
    shutil.copy(ROOT / "pyproject.toml", clone)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    [command] = _run_cell(monkeypatch, importable=False).calls
    assert command[-1] == str(clone)


def _fresh_environment(tmp_path: Path) -> Path:
    """A virtual environment without the project: this one's packages (TensorFlow and the rest, no download)
    through a plain path in a .pth file, leaving out the project's metadata and its editable-install finder."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    dependencies = tmp_path / "dependencies"
    dependencies.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("keras_nlp_week4", "keras-nlp-week4", "__editable__")) \
                and entry.suffix != ".pth":
            (dependencies / entry.name).symlink_to(entry)
    site_packages = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    Path(site_packages, "dependencies.pth").write_text(f"{dependencies}\n")
    return python


def _copy_of_the_project(target: Path) -> Path:
    """The files git does not ignore (tracked, or new and not ignored), as they are in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


# 31 s on a 2-core AVX2 EPYC (a fresh virtual environment and an install): in the large tier, which CI runs.
@pytest.mark.large
def test_a_notebook_runs_in_a_fresh_environment_where_its_first_cell_installs_the_project(tmp_path, monkeypatch):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("copies the project with git ls-files")
    from nbclient import NotebookClient

    started = time.perf_counter()
    python = _fresh_environment(tmp_path)
    work = tmp_path / "work"  # outside the repository, like Colab's /content
    work.mkdir()
    for name in ("PYTHONPATH", VARIABLE):
        monkeypatch.delenv(name, raising=False)
    probe = subprocess.run([python, "-c", "import numpy, ipykernel, keras; import keras_nlp_week4"], cwd=work,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'keras_nlp_week4'" in probe.stderr, probe.stderr[-2000:]

    # Nowhere to install from: one message saying how to get the project.
    nowhere = subprocess.run([python, "-c", INSTALL_CELL], cwd=work, capture_output=True, text=True)
    assert nowhere.returncode != 0
    assert "ModuleNotFoundError" in nowhere.stderr and VARIABLE in nowhere.stderr
    assert "/content/keras-nlp-week4" in nowhere.stderr and "git clone" in nowhere.stderr

    # The variable names a copy of the project (the local clone's files): the first cell installs it and the
    # notebook runs top to bottom in that environment's kernel, from a folder outside the repository.
    project = _copy_of_the_project(tmp_path / "project")
    kernels = tmp_path / "jupyter" / "kernels" / "fresh-env"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh env", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv(VARIABLE, str(project))
    monkeypatch.setenv("NOTEBOOK_SMALL", "1")
    notebook = jupytext.read(ROOT / "notebooks" / "03_transformer.py")
    NotebookClient(notebook, timeout=600, kernel_name="fresh-env",
                   resources={"metadata": {"path": str(work)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in code[0].outputs)
    assert f"Installing keras-nlp-week4 from {project}" in printed

    installed = subprocess.run([python, "-c", "import keras_nlp_week4, export, serving; "
                                "print(keras_nlp_week4.__file__)"], cwd=work, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert Path(installed.stdout.strip()).is_relative_to(tmp_path / "env"), installed.stdout
    print(f"fresh environment, install and notebook: {time.perf_counter() - started:.0f} s")
