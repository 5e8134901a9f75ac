"""The notebooks: generated from one template; the overview and one strategy notebook run (small mode).

The six strategy notebooks are proven identical but for the `STRATEGY` cell, so executing one of them
covers the code of all six; executing the other five again cost about five minutes of the suite.
"""
import json
import re
import subprocess
import sys

import pytest

from conftest import REPO

NOTEBOOK_DIR = REPO / "notebooks"
STRATEGY_BOOKS = sorted(NOTEBOOK_DIR.glob("MultiMAE_DER_[A-Z]*.ipynb"))
ALL_BOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# FSLF: the paper's best strategy; the overview trains every strategy and both single modalities.
EXECUTED_BOOKS = [NOTEBOOK_DIR / "MultiMAE_DER_FSLF.ipynb", NOTEBOOK_DIR / "MultiMAE_DER_overview.ipynb"]


def test_notebooks_match_their_template():
    result = subprocess.run([sys.executable, str(NOTEBOOK_DIR / "generate.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert {p.stem.split("_")[-1] for p in STRATEGY_BOOKS} == {"CFAS", "SFAS", "FFLS", "FSLF", "OFOS", "RFAS"}
    assert (NOTEBOOK_DIR / "MultiMAE_DER_overview.ipynb") in ALL_BOOKS
    assert set(EXECUTED_BOOKS) <= set(ALL_BOOKS)
    assert set(ALL_BOOKS) - set(EXECUTED_BOOKS) <= set(STRATEGY_BOOKS), "a notebook that is neither run nor proven"


def _code(path):
    return [("".join(c["source"])) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_strategy_notebooks_differ_only_in_the_strategy():
    reference = None
    for path in STRATEGY_BOOKS:
        strategy = path.stem.split("_")[-1].lower()
        code = _code(path)
        assert code[1] == f"STRATEGY = {strategy!r}"
        # Blank the strategy out of the one cell that names it: the rest must be identical.
        normalised = [re.sub(rf"\b{strategy}\b", "S", cell) for cell in code]
        if reference is None:
            reference = normalised
        assert normalised == reference, path.name


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("notebook_runs")
    monkeypatch_module.setenv("MMDER_NOTEBOOK_SMALL", "1")
    monkeypatch_module.setenv("MMDER_NOTEBOOK_OUT", str(out))
    monkeypatch_module.setenv("MMDER_CACHE", str(tmp_path_factory.mktemp("mmder_cache")))
    # The kernel's own inline backend, as on Colab: plt.show() must put a PNG in the outputs.
    monkeypatch_module.delenv("MPLBACKEND", raising=False)
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("path", EXECUTED_BOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_small_mode(path, notebook_env):
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    # Raises CellExecutionError naming the cell if any cell fails.
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebook_env)}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs), \
        "the notebook shows no picture"
