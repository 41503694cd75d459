"""Draws docs/figures/architecture.png, the picture of ARCHITECTURE.md: graphode's
layers (imports point down) and, for one op, where each of its parts lives.

    python docs/architecture.py            # writes docs/figures/architecture.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures" / "architecture.png"

# (label, what lives there), top to bottom: a layer imports only the layers below it.
LAYERS = [
    ("graphode.cli / graphode.train / graphode.sweep", "commands, training loop, checkpoints, sweeps"),
    ("graphode.models", "GRAND, deep GCN: compose ops and solvers, hold no numerics"),
    ("graphode.solvers  |  graphode.ops", "odeint & tableaux  |  one public function per op"),
    ("graphode.Graph", "CSR over targets + cached CSC transpose"),
]

# One op's parts, left to right: the public op dispatches to one of four backends.
OP_PARTS = [
    ("public op", "graphode/ops/<op>.py", "validation, dispatch,\nthe one autograd.Function,\nfake kernels"),
    ("reference", "graphode/ops/reference.py", "pure torch, ground truth,\ndifferentiated by autograd"),
    ("cpu", "csrc/<op>.cpp\ncsrc/cpu/<op>_cpu.{h,cpp}", "schema + torch wrapper;\nOpenMP kernels (no torch)"),
    ("cuda", "csrc/<op>.cpp\ncsrc/cuda/<op>_cuda.{h,cu}", "same wrapper template;\nCUDA launchers (no torch)"),
    ("triton", "kernels/<op>.py", "@triton.jit kernels +\ngraphode_triton::<op> ops"),
    ("tests / bench", "tests/ops/test_<op>.py\nbench/test_bench_<op>.py", "every backend vs reference;\nagainst the strongest peer"),
]


def draw(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(15.5, 7.2))
    ax.set_xlim(0, 15.5)
    ax.set_ylim(0, 7.2)
    ax.axis("off")

    def box(x, y, w, h, title, body, color):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="0.3"))
        ax.text(x + w / 2, y + h - 0.17, title, ha="center", va="top", fontsize=9.5, weight="bold", family="monospace")
        ax.text(x + w / 2, y + 0.12, body, ha="center", va="bottom", fontsize=8.3, color="0.15")

    def arrow(x0, y0, x1, y1):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=11, color="0.35", lw=1.1))

    ax.text(0.2, 7.0, "Layers (each imports only the layers below it)", fontsize=11, weight="bold", va="top")
    y = 6.35
    for i, (title, body) in enumerate(LAYERS):
        box(0.3, y - 0.62, 14.9, 0.62, title, body, ["#e8eef7", "#e3f1e3", "#fbf1dd", "#eeeeee"][i])
        if i:
            arrow(7.75, y + 0.2, 7.75, y + 0.02)
        y -= 0.82

    ax.text(0.2, 3.12, "One op, one name in every layer (here for <op> = spmm, edge_attention, attention_diffusion)",
            fontsize=11, weight="bold", va="top")
    w, gap, x = 2.35, 0.16, 0.3
    colors = ["#fbf1dd", "#eeeeee", "#e3f1e3", "#e3f1e3", "#e8eef7", "#f6e3e3"]
    centers = []
    for (title, files, body), c in zip(OP_PARTS, colors):
        box(x, 0.1, w, 2.2, title, body, c)
        ax.text(x + w / 2, 1.63, files, ha="center", va="top", fontsize=7.6, family="monospace", color="0.05")
        centers.append(x + w / 2)
        x += w + gap
    # the public op dispatches to one of the four backends
    ax.plot([centers[0], centers[0], centers[4]], [2.3, 2.5, 2.5], color="0.35", lw=1.1)
    for cx in centers[1:5]:
        arrow(cx, 2.5, cx, 2.32)
    ax.text((centers[1] + centers[4]) / 2, 2.53, "backend = None | \"reference\" | \"cpu\" | \"cuda\" | \"triton\"",
            ha="center", va="bottom", fontsize=8.5, style="italic", color="0.25")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    print(draw(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
