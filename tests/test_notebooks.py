"""The lecture notebooks: each runs top to bottom (small setting) and its .ipynb twin matches its source."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import ROOT

_spec = importlib.util.spec_from_file_location("notebooks_execute", ROOT / "notebooks" / "execute.py")
execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute)

NOTEBOOKS = execute.sources()


def test_there_is_a_notebook_per_part_of_the_lecture():
    assert [p.stem for p in NOTEBOOKS] == ["01_seq2seq", "02_attention", "03_transformer", "04_chatbot",
                                          "05_export_and_serve"]


def test_ipynb_twins_match_their_sources_and_hold_no_outputs(tmp_path):
    assert execute.stale(NOTEBOOKS) == []
    # The check can fail: a twin with an output, or edited away from its source.
    import shutil

    import nbformat

    copy = tmp_path / NOTEBOOKS[0].name
    shutil.copy(NOTEBOOKS[0], copy)
    execute.sync([copy])
    twin = nbformat.read(copy.with_suffix(".ipynb"), as_version=4)
    code = next(c for c in twin.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi")]
    nbformat.write(twin, copy.with_suffix(".ipynb"))
    assert "holds outputs" in execute.stale([copy])[0]
    copy.write_text(copy.read_text() + "\n# %%\nprint('new cell')\n")
    execute.sync([copy])
    copy.write_text(copy.read_text() + "\n# %%\nprint('another')\n")
    assert "differs from" in execute.stale([copy])[0]


# In the large tier, which CI runs: the notebooks train (notebook 3 alone took 14 s on a 2-core AVX2 EPYC,
# where `make test` came near its 10 minutes).
@pytest.mark.large
@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(source, tmp_path):
    """Every cell runs without an error; the lecture's worked examples are asserted inside the cells."""
    import nbformat

    executed = execute.execute(source, tmp_path, small=True)
    notebook = nbformat.read(executed, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    # Something to look at: every notebook but the one without figures draws at least one picture.
    pictures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert pictures or source.stem == "05_export_and_serve"
