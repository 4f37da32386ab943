"""docs/notebooks/r1-zero.ipynb runs as written, on the micro budget its R1LAB_NOTEBOOK_QUICK switch sets: R1-Zero
from Python with a reward written in a cell, the curves inline, a question answered; and its progress lines are
whole lines (no carriage returns) in the notebook's outputs."""

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "r1-zero.ipynb"


@pytest.mark.slow
def test_the_notebook_runs(tmp_path, monkeypatch):
    import nbclient  # the dev extra's (pyproject.toml)
    import nbformat

    monkeypatch.setenv("R1LAB_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("R1LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOK.parents[2]), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    texts = [out.get("text", "") for out in outputs] + [out.get("data", {}).get("text/plain", "") for out in outputs]
    assert not any("\r" in text for text in texts), "a progress line with a carriage return reached the notebook"
    assert any("image/png" in out.get("data", {}) for out in outputs), "the curves were not drawn inline"
    assert any("text/html" in out.get("data", {}) and "final model" in out["data"]["text/html"] for out in outputs)
    assert any("grpo 3/3" in text for text in texts), "r1lab's progress lines did not reach the notebook"
    assert any("answer:" in text for text in texts)
    assert not any("thinking ─" in text for text in texts), "r1lab.chat(model, message) returns its reply, prints nothing"
    assert not any(out.get("name") == "stderr" for out in outputs), "HF's or tqdm's own output reached the notebook"
    assert (tmp_path / "runs" / "r1-zero-notebook" / "summary.json").exists()
