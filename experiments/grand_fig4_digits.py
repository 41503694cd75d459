"""GRAND Figure 4: GRAND-nl against constant-Laplacian diffusion on digit images.

The paper (section 6.4) builds a superpixel graph of MNIST images, labels every
node digit / background, trains on a 50% node mask and evolves GRAND-nl and a
constant Laplacian diffusion for T = 4.8 with τ = 0.8 (6 steps, "a 6 layer
GNN"), then shows the attention weights as edge colour and width.

Here (offline, no MNIST): scikit-learn's bundled 8x8 ``load_digits`` images,
upsampled bilinearly to ``--size`` x ``--size`` (16 by default), as a pixel
grid graph (:func:`graphode.graph.grid_graph`, 4- or 8-neighbourhood); all
images of a run form one disconnected graph.

* node feature: the pixel intensity in [0, 1] (``--position`` adds the
  normalised (row, column));
* node label: digit (intensity > ``--threshold``) or background;
* images: ``--images`` training images, on which a random 50% of the pixels is
  the training mask and the other 50% the validation mask (the trainer keeps
  the best validation epoch), and ``--heldout`` further images whose pixels are
  all test pixels (never trained on; the figure shows some of them).

Both models come from the registry (``graphode.models.build("grand-nl" /
"grand-laplacian", ...)``) with the same config: T = 4.8, fixed step 0.8
(``--method euler`` by default: exactly 6 layers), no source term (pure
diffusion, ``--source`` adds GRAND's ``β x0``), no dropout; they are trained with
:func:`graphode.train.fit`.  After training, one evaluation pass records (by
hooks, no model code here) the state at each of the vector field's evaluations
and the decoder's input ``ReLU(x(T))``; the GRAND-nl attention
(:meth:`GraphAttention.edge_attention`, heads averaged) is taken at those states.

    .venv/bin/python experiments/grand_fig4_digits.py            # ~2 min on one core

Writes ``experiments/results/grand_fig4_digits.png`` and ``.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
RESULTS = os.path.join(HERE, "results")

PAPER = "GRAND (Chamberlain et al., 2021), Figure 4: MNIST superpixels, T = 4.8, tau = 0.8"


# --------------------------------------------------------------------------- data
def digits_dataset(args):
    """The batched pixel graph as a :class:`graphode.datasets.NodeDataset`, plus the
    images ``[B, S, S]`` and the image index of the held-out ones."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from graphode.datasets import NodeDataset
    from graphode.graph import grid_graph

    d = load_digits()
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(d.images), generator=gen)[: args.images + args.heldout]
    img = torch.as_tensor(d.images, dtype=torch.float32)[order] / 16.0  # [B, 8, 8] in [0, 1]
    if args.size != 8:
        img = F.interpolate(img[:, None], size=(args.size, args.size), mode="bilinear",
                            align_corners=False)[:, 0].clamp(0, 1)
    B, S = img.size(0), args.size
    n = S * S
    graph = grid_graph(S, S, connectivity=args.connectivity, num_grids=B)
    x = img.reshape(-1, 1)
    if args.position:
        rc = torch.stack(torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij"), -1).reshape(n, 2)
        x = torch.cat([x, (rc.float() / (S - 1)).repeat(B, 1)], dim=1)
    y = (img.reshape(-1) > args.threshold).long()
    on_train_image = torch.arange(B).repeat_interleave(n) < args.images
    coin = torch.rand(B * n, generator=gen) < 0.5
    ds = NodeDataset(
        name=f"digits-{S}x{S}-grid{args.connectivity}", x=x, y=y, edge_index=graph.edge_index,
        train_mask=on_train_image & coin, val_mask=on_train_image & ~coin, test_mask=~on_train_image,
        num_classes=2, info={"source": "sklearn.datasets.load_digits", "image_ids": order.tolist()},
    )
    return ds, img, torch.as_tensor(d.target)[order]


def model_config(args):
    return {
        "hidden_dim": args.hidden, "time": 4.8, "method": args.method, "step_size": 0.8,
        "heads": args.heads, "attention_dim": args.attention_dim, "input_dropout": 0.0, "dropout": 0.0,
        "source_term": args.source, "self_loop_weight": 1.0, "adjoint": False,
        "optimizer": "adam", "lr": args.lr, "weight_decay": args.weight_decay, "epochs": args.epochs,
        "threads": args.threads,
    }


class KeepBest:
    """Trainer callback: a copy of the model's weights at the best validation epoch."""

    def __init__(self):
        self.state = None

    def on_epoch_end(self, trainer, epoch, logs):
        if trainer.best["epoch"] == epoch:
            self.state = copy.deepcopy(trainer.model.state_dict())


@torch.no_grad()
def probe(model, ds):
    """One eval forward; returns logits ``[N, 2]``, the decoder input ReLU(x(T)) ``[N, d]``
    and the states at which the vector field was evaluated (list of ``[N, d]``)."""
    states, dec_in = [], []
    h1 = model.odefunc.register_forward_pre_hook(lambda m, a: states.append(a[1]))
    h2 = model.decoder.register_forward_pre_hook(lambda m, a: dec_in.append(a[0]))
    model.eval()
    try:
        logits = model(ds.x)
    finally:
        h1.remove()
        h2.remove()
    return logits, dec_in[0], states


@torch.no_grad()
def edge_weights(model, states):
    """Per-edge diffusion weights ``[L, E]`` (``model.graph`` order, self loops included):
    GRAND-nl's head-mean attention at each evaluated state; the Laplacian's constant
    row-normalised adjacency (repeated)."""
    if model.attention is None:
        return model.laplacian_weight[None].expand(len(states), -1)
    return torch.stack([model.attention.edge_attention(model.graph, s).mean(1) for s in states])


# --------------------------------------------------------------------------- statistics
def edge_stats(graph, w, y, nodes):
    """Mean weight of non-self-loop edges (targets in ``nodes``) within a class / across
    the digit-background boundary, and the share of a boundary node's neighbour weight
    that crosses the boundary."""
    src, dst = graph.col, graph.row
    sel = nodes[dst] & (src != dst)
    same = y[src] == y[dst]
    within, across = w[sel & same], w[sel & ~same]
    nb = torch.zeros(graph.num_nodes).index_add_(0, dst[sel], w[sel])
    nbx = torch.zeros(graph.num_nodes).index_add_(0, dst[sel & ~same], w[sel & ~same])
    boundary = torch.zeros(graph.num_nodes, dtype=torch.bool)
    boundary[dst[sel & ~same]] = True
    loops = w[nodes[dst] & (src == dst)]
    top = torch.zeros(graph.num_nodes).scatter_reduce(0, dst[sel], w[sel], "amax", include_self=False)
    return {
        "mean_within": float(within.mean()), "mean_across": float(across.mean()),
        "within_over_across": float(within.mean() / across.mean()),
        "boundary_cross_share": float((nbx[boundary] / nb[boundary]).mean()),
        "mean_self_loop": float(loops.mean()),
        "mean_largest_neighbour_weight": float(top[nodes].mean()),
    }, boundary


def first_pc(z, ref):
    """First principal component of the rows of ``z`` ``[n, d]``, signed to correlate
    positively with ``ref`` ``[n]`` (for display)."""
    zc = z - z.mean(0)
    v = torch.linalg.svd(zc, full_matrices=False).Vh[0]
    pc = zc @ v
    return pc if float(torch.corrcoef(torch.stack([pc, ref]))[0, 1]) >= 0 else -pc


def separation(v, y):
    """Class separation of a pixel map: (mean over digit pixels - mean over background)
    divided by the pooled within-class standard deviation (an image-contrast measure)."""
    a, b = v[y == 1], v[y == 0]
    return float((a.mean() - b.mean()) / ((a.var() + b.var()) / 2).sqrt())


# --------------------------------------------------------------------------- plot
def plot(png, img, labels, digits, res, graph, S, show):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap, Normalize

    n = S * S
    vmax = max(float(res[m]["w_show"][res[m]["w_show_sel"]].max()) for m in res)
    norm = Normalize(0.0, vmax)
    cmap = ListedColormap(plt.get_cmap("magma_r")(np.linspace(0.12, 1.0, 256)))
    models = (("grand-nl", "GRAND-nl", "attention"), ("grand-laplacian", "Laplacian", "weights (uniform)"))
    cols = ["input (red: label boundary)"]  # edge panels: digit pixels pale blue
    for _, lab, wname in models:
        cols += [f"{lab}: x(T), 1st principal comp.", f"{lab}: edge {wname}"]
    fig, axes = plt.subplots(len(show), 5, figsize=(15, 3.0 * len(show) + 0.9), squeeze=False)
    for r, b in enumerate(show):
        nodes = slice(b * n, (b + 1) * n)
        lab = labels[nodes].view(S, S).numpy()
        ax = axes[r, 0]
        ax.imshow(img[b].numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.contour(lab, levels=[0.5], colors="tab:red", linewidths=1.0)
        ax.set_ylabel(f"held-out digit '{int(digits[b])}'", fontsize=11)
        for k, (m, _, _) in enumerate(models):
            d = res[m]
            ax = axes[r, 1 + 2 * k]
            ax.imshow(d["pc1"][nodes].view(S, S).numpy(), cmap="gray_r")
            ax.contour(lab, levels=[0.5], colors="tab:red", linewidths=0.6, alpha=0.6)
            ax = axes[r, 2 + 2 * k]
            ax.imshow(lab, cmap="Blues", vmin=0, vmax=4)  # digit pixels pale blue
            # edge j -> i drawn from pixel i half-way towards j: the weight i gives to j
            e = d["w_show_sel"] & (graph.row >= b * n) & (graph.row < (b + 1) * n)
            i, j = graph.row[e] - b * n, graph.col[e] - b * n
            yi, xi = (i // S).float(), (i % S).float()
            yj, xj = (j // S).float(), (j % S).float()
            seg = torch.stack([torch.stack([xi, yi], 1), torch.stack([(xi + xj) / 2, (yi + yj) / 2], 1)], 1)
            w = d["w_show"][e].numpy()
            ax.add_collection(LineCollection(seg.numpy(), colors=cmap(norm(w)), linewidths=0.3 + 3.5 * w / vmax,
                                             capstyle="butt"))
    for c, t in enumerate(cols):
        axes[0, c].set_title(t, fontsize=11)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    nl, lp = res["grand-nl"], res["grand-laplacian"]
    fig.suptitle(
        f"GRAND-nl vs constant-Laplacian diffusion, T = 4.8, τ = 0.8 (6 steps), {S}x{S} pixel graphs of "
        f"sklearn digits (digit vs background)\nheld-out pixel accuracy: GRAND-nl {100 * nl['test_acc']:.1f}% "
        f"(boundary pixels {100 * nl['boundary_acc']:.1f}%), Laplacian {100 * lp['test_acc']:.1f}% "
        f"({100 * lp['boundary_acc']:.1f}%)   |   mean edge weight within / across the boundary: "
        f"GRAND-nl {nl['attention']['layer_mean']['within_over_across']:.1f}x, "
        f"Laplacian {lp['attention']['layer_mean']['within_over_across']:.2f}x",
        fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.93, 0.95))
    cax = fig.add_axes((0.94, 0.12, 0.012, 0.74))
    cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    cb.set_label("weight a_ij that pixel i gives neighbour j (segment from i towards j; width ∝ weight)\n"
                 "GRAND-nl: head-mean attention averaged over the 6 steps; Laplacian: 1/(deg+1)", fontsize=9)
    fig.savefig(png, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=128, help="training images (50%% pixel train mask)")
    p.add_argument("--heldout", type=int, default=64, help="held-out images (test pixels)")
    p.add_argument("--size", type=int, default=16, help="upsampled image side (8: original pixels)")
    p.add_argument("--connectivity", type=int, default=4, choices=[4, 8])
    p.add_argument("--threshold", type=float, default=0.5, help="digit if intensity > threshold")
    p.add_argument("--position", action="store_true", help="add normalised (row, col) features")
    p.add_argument("--source", action="store_true", help="GRAND's source term beta*x0 (default off)")
    p.add_argument("--method", default="euler", help="fixed-step method (euler: 6 steps of 0.8)")
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--attention-dim", type=int, default=16)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--show", type=int, default=4, help="held-out digits in the figure")
    p.add_argument("--png", default=os.path.join(RESULTS, "grand_fig4_digits.png"))
    p.add_argument("--json", default=os.path.join(RESULTS, "grand_fig4_digits.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import graphode.models
    from graphode.train import fit, seed_everything

    ds, img, digits = digits_dataset(args)
    print(f"{ds}: {int(ds.y.float().mean() * 100)}% digit pixels", flush=True)
    cfg = model_config(args)
    res, models = {}, {}
    for name in ("grand-nl", "grand-laplacian"):
        seed_everything(args.seed)
        model = graphode.models.build(name, ds, {**cfg, "model": name})
        keep = KeepBest()
        t0 = time.perf_counter()
        r = fit(model, ds, cfg, callbacks=[keep], seed=args.seed, progress=sys.stderr.isatty())
        model.load_state_dict(keep.state)
        print(f"{name:16s} held-out pixel acc {100 * r['test_acc']:.2f}% (val {100 * r['val_acc']:.2f}%, "
              f"best epoch {r['best_epoch'] + 1}/{r['epochs']}, {time.perf_counter() - t0:.0f} s, "
              f"NFE {r['nfe']:.0f})", flush=True)
        res[name] = {k: r[k] for k in ("test_acc", "val_acc", "train_acc", "best_epoch", "epochs",
                                       "epoch_time_s", "nfe")}
        models[name] = model

    # ---- probe the trained models on the held-out images
    g = models["grand-nl"].graph  # with self loops; the Laplacian's has the same edges
    assert torch.equal(g.col, models["grand-laplacian"].graph.col)
    test = ds.test_mask
    for name, model in models.items():
        logits, z, states = probe(model, ds)
        w = edge_weights(model, states)  # [L, E]
        st = {}
        for key, wk in (("t0", w[0]), ("last_step", w[-1]), ("layer_mean", w.mean(0))):
            st[key], boundary = edge_stats(g, wk, ds.y, test)
        pred = logits.argmax(1)
        pc1 = first_pc(z, ds.x[:, 0])
        res[name].update({
            "boundary_acc": float((pred == ds.y)[test & boundary].float().mean()),
            "interior_acc": float((pred == ds.y)[test & ~boundary].float().mean()),
            "pc1_input_corr": float(torch.corrcoef(torch.stack([pc1[test], ds.x[test, 0]]))[0, 1]),
            "pc1_separation": separation(pc1[test], ds.y[test]),
            "sigmoid_alpha": float(torch.sigmoid(model.odefunc.alpha_train.detach())),
            "attention": st,
        })
        res[name]["pc1"] = pc1
        res[name]["p_digit"] = logits.softmax(1)[:, 1]
        res[name]["w_show"] = w.mean(0)
        res[name]["w_show_sel"] = g.row != g.col
        a = st["layer_mean"]
        print(f"{name:16s} boundary-pixel acc {100 * res[name]['boundary_acc']:.2f}%, "
              f"interior {100 * res[name]['interior_acc']:.2f}%; edge weight within {a['mean_within']:.3f} / "
              f"across {a['mean_across']:.3f} = {a['within_over_across']:.2f}; boundary nodes' cross share "
              f"{a['boundary_cross_share']:.3f}; self loop {a['mean_self_loop']:.3f}; largest neighbour weight "
              f"{a['mean_largest_neighbour_weight']:.3f}; "
              f"sigmoid(alpha) {res[name]['sigmoid_alpha']:.3f}; corr(PC1 x(T), input) "
              f"{res[name]['pc1_input_corr']:.3f}; class separation of PC1 x(T) {res[name]['pc1_separation']:.2f} "
              f"(input {separation(ds.x[test, 0], ds.y[test]):.2f})", flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
    B0 = args.images
    show = [B0 + k for k in range(min(args.show, args.heldout))]
    plot(args.png, img, ds.y, digits, res, g, args.size, show)
    out = {
        "paper": PAPER,
        "command": " ".join([".venv/bin/python experiments/grand_fig4_digits.py", *(argv or sys.argv[1:])]),
        "settings": {**vars(args), "png": os.path.relpath(args.png, ROOT), "json": os.path.relpath(args.json, ROOT),
                     "model_config": cfg, "nodes": ds.num_nodes, "edges": ds.num_edges,
                     "digit_pixel_share": float(ds.y.float().mean()),
                     "input_separation": separation(ds.x[test, 0], ds.y[test]),
                     "train_pixels": int(ds.train_mask.sum()), "val_pixels": int(ds.val_mask.sum()),
                     "test_pixels": int(ds.test_mask.sum())},
        "results": {m: {k: v for k, v in r.items() if not isinstance(v, torch.Tensor)} for m, r in res.items()},
    }
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.png} and {args.json}")


if __name__ == "__main__":
    main()
