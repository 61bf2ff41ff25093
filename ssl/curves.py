"""Training curves as a picture: loss and Hit@3 (synthetic and labeled) per epoch, from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import MaxNLocator

from core.base.figures import plt, save_png


def plot_training_curves(records: list[dict], out: str | Path, title: str = "") -> Path:
    """Two panels: mean training loss per epoch; Hit@3 (after the post steps, and raw dotted) and
    effective rank per evaluation."""
    fig, (ax_loss, ax_hit) = plt.subplots(1, 2, figsize=(10, 3.6))
    with_loss = [r for r in records if r.get("loss") is not None]
    ax_loss.plot([r["epoch"] for r in with_loss], [r["loss"] for r in with_loss], "o-", color="tab:red")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (epoch mean)")
    ax_loss.grid(alpha=0.3)
    epochs = [r["epoch"] for r in records]
    for key, label, colour in (("synthetic", "synthetic Hit@3", "tab:blue"), ("overall", "labeled Hit@3", "tab:green")):
        values = [(r["epoch"], r[key]["hit@3"]) for r in records if r.get(key)]
        if values:
            ax_hit.plot(*zip(*values, strict=True), "o-", color=colour, label=label)
        raw = [(r["epoch"], r[key]["raw"]["hit@3"]) for r in records if (r.get(key) or {}).get("raw")]
        if raw:  # the same before the post steps: the dashed line shows what whitening adds
            ax_hit.plot(*zip(*raw, strict=True), "o:", color=colour, alpha=0.6, label=f"{label}, raw")
    ax_hit.set_xlabel("epoch (0 = before training)")
    ax_hit.set_ylabel("Hit@3")
    ax_hit.set_ylim(0, 1)
    ax_hit.grid(alpha=0.3)
    rank = ax_hit.twinx()
    rank.plot(epochs, [r["effective_rank"] for r in records], "s--", color="tab:gray", label="effective rank")
    rank.set_ylabel("effective rank")
    lines = ax_hit.get_legend_handles_labels()
    more = rank.get_legend_handles_labels()
    ax_hit.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    for ax in (ax_loss, ax_hit):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    save_png(fig, out)
    return Path(out)
