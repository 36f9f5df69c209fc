"""What a user sees when a data file cannot be used, and input that must not be silently dropped (issue 41).

Each test reproduces one fault as a user meets it; the answer is a refusal that names the file or value and what to
do, and nothing written before is lost.
"""

from __future__ import annotations

import pytest

from e2p_lib.run_notebooks import run_notebooks

# --- 3. a misspelled notebook parameter --------------------------------------------------------------------------


def test_a_notebook_parameter_no_selected_notebook_declares_is_refused_naming_the_nearest(tmp_path):
    """`-p limt=50` used to run 01_embed with its default limit; now nothing runs (the kernel check comes after,
    so a missing kernel cannot be what stops it)."""
    with pytest.raises(ValueError, match=r"'limt' \(did you mean 'limit'\?\)"):
        run_notebooks("smoke", ["01_embed"], {"limt": 50}, tmp_path, kernel_name="no-such-kernel")
    with pytest.raises(ValueError, match=r"'steps'.*--only"):  # 04_rl's parameter, but 04_rl is not selected
        run_notebooks("smoke", ["01_embed"], {"limit": 50, "steps": 3}, tmp_path, kernel_name="no-such-kernel")
    assert not list(tmp_path.iterdir())  # nothing executed
    with pytest.raises(RuntimeError, match="No Jupyter kernel named 'no-such-kernel'"):  # a declared key passes
        run_notebooks("smoke", ["01_embed"], {"limit": 50}, tmp_path, kernel_name="no-such-kernel")
