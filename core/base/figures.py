"""Figures: matplotlib without a display, saved as PNG atomically (no half-written picture)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from core.base.atomic import atomic_path  # noqa: E402

__all__ = ["plt", "save_png"]


def save_png(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Lay ``fig`` out, write it to ``path`` as PNG (atomically) and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)
