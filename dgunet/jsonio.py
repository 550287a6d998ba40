"""JSON has no infinity and no NaN: one rule for every score, record and table this package writes.

A perfect reconstruction has PSNR inf, and a diverged run can log a nan loss. Python's json module
would write them as the bare words Infinity / NaN, which other JSON readers reject; they are written
as the strings "inf", "-inf" and "nan" instead (float("inf") reads them back).
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` with every non-finite real number replaced by its string, inside lists, tuples and
    dicts too; finite numbers, strings, None and other values are returned unchanged."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value
