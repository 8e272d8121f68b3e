"""Plots written by the commands (matplotlib, Agg backend, written atomically)."""
from __future__ import annotations

from typing import Dict, Optional

from ..io.files import atomic_write


def plot_accuracy_vs_timesteps(path: str, converted: Dict[int, float], hybrids: Dict[str, tuple],
                               ann_accuracy: Optional[float] = None, title: str = "") -> str:
    """Converted-SNN accuracy against time steps, hybrid SNNs as points, the ANN as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    steps = sorted(converted)
    ax.plot(steps, [100 * converted[t] for t in steps], "o-", label="converted SNN (no fine-tuning)")
    for i, (label, (T, acc)) in enumerate(hybrids.items()):
        ax.plot([T], [100 * acc], "*^sD"[i % 4], markersize=12, label=label)
    if ann_accuracy is not None:
        ax.axhline(100 * ann_accuracy, color="gray", linestyle="--", label=f"ANN {100 * ann_accuracy:.2f}%")
    ax.set_xscale("log")
    ax.set_xlabel("time steps T (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "accuracy against time steps")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
