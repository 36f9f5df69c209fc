"""What every notebook does first and last: show e2p's INFO logs and wide tables, and state what the run found.

    from e2p_lib.notebook import setup_notebook, show_findings
    setup_notebook()                                    # in the import cell
    ...
    show_findings(f"mean answer cosine {cosine:.3f}")  # the last cell: numbers from this run's variables

Jupyter shows a kernel's stderr under the cell, so a logging handler on stderr is enough for the library's INFO
lines (cache hits, cost estimates, checkpoints) to appear in JupyterLab and in papermill's executed copies.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import pandas as pd

LOGGER_NAME = "e2p_lib"
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Marks the handler setup_notebook adds, so rerunning the import cell does not print every line twice.
_HANDLER_FLAG = "_e2p_notebook_handler"


def setup_notebook(level: int | str = logging.INFO, max_colwidth: int = 100, max_rows: int = 60) -> None:
    """Send e2p_lib's log records at `level` to the notebook, and set pandas' display options.

    Only the `e2p_lib` logger is touched (other libraries keep their own levels); calling it again replaces the
    handler instead of adding a second one. `max_colwidth` is in characters: prompts and answers are long.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    setattr(handler, _HANDLER_FLAG, True)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # a root handler (e.g. basicConfig elsewhere) would print each line again
    pd.set_option("display.max_colwidth", max_colwidth)
    pd.set_option("display.max_rows", max_rows)
    pd.set_option("display.width", 200)
    pd.set_option("display.precision", 4)


def findings_markdown(*lines: str, title: str = "What this run shows") -> str:
    """`lines` as a Markdown bullet list under a bold `title`."""
    if not lines:
        raise ValueError("show_findings needs at least one line to show.")
    return f"**{title}**\n\n" + "\n".join(f"- {line}" for line in lines)


def show_findings(*lines: str, title: str = "What this run shows") -> None:
    """Display `findings_markdown(*lines)` as Markdown (plain text outside IPython).

    The lines are written by the caller from the run's own variables, so the summary never goes stale. Returns
    None: it is a cell's last line, and a returned string would be shown a second time.
    """
    text = findings_markdown(*lines, title=title)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # IPython is a dependency of ipykernel, but the library itself must not need it
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Markdown(text))
    else:
        print(text)


def method_findings(
    table: pd.DataFrame, score: str = "mean_cosine", baselines: Sequence[str] = ("original prompt", "nearest neighbour")
) -> list[str]:
    """Sentences for an evaluation table (index: method): the best method by `score`, and its gap to each baseline.

    Baselines missing from the table are skipped; the best method is compared with the others only. Works for any
    table shaped like `e2p_lib.evaluate.metrics.results_table`'s.
    """
    if score not in table.columns:
        raise KeyError(f"The table has no column {score!r}; it has {list(table.columns)}.")
    if table.empty:
        raise ValueError("The results table is empty: no method was evaluated.")
    values = table[score].astype(float)
    learned = values.drop([b for b in baselines if b in values.index])
    best = (learned if not learned.empty else values).idxmax()
    lines = [f"best method by {score}: **{best}** at {values[best]:.3f} over {len(values)} methods"]
    for baseline in baselines:
        if baseline in values.index and baseline != best:
            gap = values[best] - values[baseline]
            verdict = "ahead of" if gap > 0 else "behind"
            lines.append(f"{best} is {abs(gap):.3f} {verdict} the {baseline} ({values[baseline]:.3f})")
    overall = values.idxmax()
    if overall != best:
        lines.append(f"the highest {score} overall is the {overall}'s ({values[overall]:.3f})")
    return lines
