"""What a saved notebook keeps: an executed copy without its volatile parts (torch-free).

:func:`sanitise` is applied to the committed notebooks (``paperlib reproduce --refresh-committed``),
to the full run's copies in ``results/notebooks/`` and to the book's copies (:mod:`paperlib.book`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["WIDGET", "sanitise"]

#: The MIME type of a Jupyter widget view (a progress bar's, here).
WIDGET = "application/vnd.jupyter.widget-view+json"


def sanitise(path: Path, keep_records: bool = False) -> None:
    """Drop volatile parts of an executed notebook: stderr streams (warnings) and progress-bar
    widgets (each with a random model id, frozen at their first frame in a saved copy) with the
    widget state they leave in the notebook's metadata (a page rendered from it would load a
    widget manager from a CDN for nothing); execution counts are renumbered 1, 2... (nbval
    treats a cell without a count as never run). Unless
    ``keep_records`` (the full run's copies in ``results/notebooks/``), also the execution
    metadata, timings and papermill's records."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)  # the state of the widget views dropped below
    if not keep_records:
        nb.metadata.pop("papermill", None)
    count = 0
    for cell in nb.cells:
        if not keep_records:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            cell.outputs = [o for o in cell.outputs
                            if not (o.output_type == "stream" and o.name == "stderr")
                            and WIDGET not in o.get("data", {})]
            for o in cell.outputs:
                if "execution_count" in o:
                    o.execution_count = count
    nbformat.write(nb, path)
