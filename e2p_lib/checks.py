"""Argument checks shared across e2p, so every module refuses bad values with the same words."""

from __future__ import annotations

import numbers
from typing import Any


def check_positive_int(value: Any, name: str) -> int:
    """`value` as an int, or a ValueError naming `name`: True/False and floats are not counts."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return int(value)
