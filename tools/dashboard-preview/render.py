"""Draws the main panels of the TKA Grafana dashboard as one PNG, from the range data that the integration
test `dashboard_every_panel_shows_data_from_a_real_server` wrote (TKA_DASHBOARD_PREVIEW=<data.json>): the
dashboard's own queries, evaluated by a real Prometheus scraping a real tka-server. Run through preview.sh.

    python render.py DATA.json OUT.png
"""
import io
import json
import sys
from datetime import datetime

import matplotlib
import matplotlib.dates

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from PIL import Image  # noqa: E402

# Grafana's dark theme and its classic palette, so the picture looks like what one gets.
BG, PANEL, GRID, TEXT = "#111217", "#181b1f", "#2c3235", "#ccccdc"
PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#ff9830", "#96d98d"]


def formatter(unit):
    """Axis labels in the panel's Grafana unit."""
    def fmt(v, _):
        if unit == "s":
            return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"
        if unit == "bytes":
            return f"{v / 2**20:.0f} MiB"
        if unit == "percentunit":
            return f"{v * 100:.0f}%"
        if unit in ("reqps", "ops"):
            return f"{v:.2g}/s"
        return f"{v:.3g}"
    return FuncFormatter(fmt)


def draw(ax, panel):
    ax.set_facecolor(PANEL)
    ax.set_title(panel["title"], color=TEXT, fontsize=10, loc="left")
    for i, s in enumerate(panel["series"]):
        points = [(datetime.fromtimestamp(t), float(v)) for t, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
        if not points:
            continue
        xs, ys = zip(*points)
        color = PALETTE[i % len(PALETTE)]
        ax.plot(xs, ys, color=color, linewidth=1.2, label=s["legend"] or panel["title"])
        ax.fill_between(xs, ys, color=color, alpha=0.08)
    ax.yaxis.set_major_formatter(formatter(panel["unit"]))
    ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%H:%M:%S"))
    ax.tick_params(colors=TEXT, labelsize=7)
    ax.grid(color=GRID, linewidth=0.5)
    ax.set_ylim(bottom=0)
    for side in ax.spines.values():
        side.set_color(GRID)
    if panel["series"]:
        ax.legend(loc="upper left", fontsize=6, frameon=False, labelcolor=TEXT, ncol=2)


def main(data, out):
    panels = json.load(open(data))
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3 * rows), facecolor=BG)
    for ax, panel in zip(axes.flat, panels):
        draw(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("TKA — Tailscale Kubernetes Auth (main panels; data: a real Prometheus scraping a real tka-server)",
                 color=TEXT, fontsize=11, x=0.01, ha="left")
    fig.tight_layout()
    # A palette image: a third of the size of full colour, and the README's picture stays small.
    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, facecolor=BG)
    Image.open(buf).convert("RGB").quantize(colors=64).save(out, optimize=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
