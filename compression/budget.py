"""How many tokens each layer keeps.

- uniform: every layer keeps the same count (`kept_count(n, ratio)`).
- pyramid (PyramidKV, Cai et al., 2024): lower layers, whose attention is spread wide, keep more; upper
  layers keep less; an arithmetic sequence whose mean is the uniform count, the top layer keeping
  `uniform / beta` (beta = 20 in the paper) and never fewer than `floor` tokens.
"""

from __future__ import annotations

from compression.policies.base import kept_count


def uniform_budgets(length: int, ratio: float, layers: int) -> list[int]:
    return [kept_count(length, ratio)] * layers


def pyramid_budgets(length: int, ratio: float, layers: int, beta: float = 20.0, floor: int = 1) -> list[int]:
    """Per-layer counts, first layer largest, summing to `layers * uniform` (up to rounding)."""
    mean = kept_count(length, ratio)
    if layers == 1:
        return [mean]
    top = max(floor, round(mean / beta))
    bottom = min(length, 2 * mean - top)
    top = 2 * mean - bottom  # keep the mean when the bottom is capped at the prompt length
    step = (bottom - top) / (layers - 1)
    return [max(floor, min(length, round(bottom - i * step))) for i in range(layers)]
