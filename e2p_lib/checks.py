"""Argument checks shared across e2p, so every module refuses bad values with the same words.

>>> check_positive_int(batch_size, "batch_size")           # 16 -> 16; 0, 2.0, True or "16" -> ValueError
>>> check_int(refine_steps, "refine_steps", minimum=0)     # counts that may be zero
>>> check_int(top_k, "top_k", maximum=10_000, hint=" (Pinecone's limit)")
"""

from __future__ import annotations

import numbers
from typing import Any


def check_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None, hint: str = "") -> int:
    """`value` as an int in [minimum, maximum], or a ValueError naming `name` and the range (plus `hint`).

    True/False and floats are refused: they are not counts. NumPy integers are accepted.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        if maximum is not None:
            wanted = f"an integer from {minimum:,} to {maximum:,}"
        else:
            wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}={value!r} must be {wanted}{hint}.")
    return int(value)


def check_positive_int(value: Any, name: str) -> int:
    """`value` as an int >= 1, or a ValueError naming `name`: True/False and floats are not counts."""
    return check_int(value, name, minimum=1)
