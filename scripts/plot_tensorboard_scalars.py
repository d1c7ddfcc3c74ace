"""Draw the TensorBoard scalars of a run, read back from its event files, as a PNG.

    python scripts/plot_tensorboard_scalars.py <run dir> docs/tensorboard_scalars.png

Reads ``<run dir>/tensorboard`` with ``tbparse`` (what TensorBoard's readers see) and draws a few
of the tags in a grid, one panel per tag, in TensorBoard's style (steps on x). Used for docs/logging.md's
figure, where no browser can take a screenshot of the TensorBoard UI.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TAGS = (
    "train/td_loss",
    "train/q_mean",
    "train/epsilon",
    "probe/plasticity",
    "probe/probe_loss",
    "stats/feature_srank_delta0.01",
    "curvature/hessian_top_eig",
    "timing/steps_per_s",
)


def main(run_dir: str, out: str) -> None:
    from tbparse import SummaryReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scalars = SummaryReader(str(Path(run_dir) / "tensorboard")).scalars
    tags = [t for t in TAGS if t in set(scalars.tag)]
    cols = 4
    rows = -(-len(tags) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        s = scalars[scalars.tag == tag].sort_values("step")
        ax.plot(s.step, s.value, color="#ff7043", lw=1.5, marker="o" if len(s) < 12 else None, ms=3)
        ax.set_title(tag, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(tags) :]:
        ax.axis("off")
    fig.suptitle(f"TensorBoard scalars of {Path(run_dir).name} (read from its event files)", fontsize=11)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}: {len(tags)} tags")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_tensorboard_scalars.py <run dir> <out.png>")
    main(sys.argv[1], sys.argv[2])
