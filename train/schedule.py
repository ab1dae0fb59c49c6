"""Learning-rate schedule driven by progress in [0, 1] (share of the time budget or of steps)."""

from __future__ import annotations


def lr_multiplier(
    progress: float, warmup_ratio: float, warmdown_ratio: float, final_lr_frac: float
) -> float:
    """Trapezoid: linear 0->1 over warmup_ratio, 1, then linear 1->final_lr_frac over the last
    warmdown_ratio.

    Unitless factor on every base learning rate; progress outside [0, 1] is clipped.
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup_ratio > 0 and progress < warmup_ratio:
        return progress / warmup_ratio
    if warmdown_ratio > 0 and progress > 1.0 - warmdown_ratio:
        remaining = (1.0 - progress) / warmdown_ratio  # 1 at the start of warm-down, 0 at the end
        return final_lr_frac + (1.0 - final_lr_frac) * remaining
    return 1.0
