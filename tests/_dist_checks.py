"""What the ranks of tests/test_distributed.py run (imported inside each rank).

Every rank builds the same small graph and data from fixed seeds, computes the
single-process result on the whole graph itself (the reference), then the
distributed result on its part, and compares its owned rows (gradients of
replicated parameters after summing over ranks).  Each check appends
``{name: max relative error}`` to the rank's JSON report; a mismatch raises,
which ends the job with that rank's message.
"""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

import graphode
from graphode import ops
from graphode.distributed import DistGraph, init_process_group, partition_graph
from graphode.distributed import solvers as dsolvers

N, E = 240, 1600
TOL64 = 1e-10


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) if b.numel() else 0.0


class Report:
    def __init__(self, rank: int):
        self.rank = rank
        self.data = {}

    def check(self, name: str, got, want, tol: float):
        e = rel_err(got, want)
        self.data[name] = e
        if not e <= tol:
            raise AssertionError(f"rank {self.rank}: {name} differs from the single-process result: "
                                 f"max relative error {e:.3g} > {tol:.1g}")

    def equal(self, name: str, got, want):
        self.data[name] = [got, want]
        if got != want:
            raise AssertionError(f"rank {self.rank}: {name}: {got} (distributed) != {want} (one process)")

    def write(self):
        out = os.environ["GRAPHODE_TEST_OUT"]
        with open(os.path.join(out, f"rank{self.rank}.json"), "w") as f:
            json.dump(self.data, f)


def setup(method: str):
    r, w = init_process_group()
    g = graphode.power_law_graph(N, E, seed=3)
    part = partition_graph(g, w, method=method, seed=0).part(r)
    return r, w, g, part


def grads_sum(ts):
    flat = torch.cat([t.reshape(-1) for t in ts])
    dist.all_reduce(flat)
    return flat


def compare_op(rep: Report, name: str, op, g, dg, part, inputs, cot, out: str = "nodes", **kw):
    """``op`` on the whole graph ``g`` and on this rank's part ``dg``: the rank's rows of the
    output and of every input's gradient (cotangent ``cot``) against the single process's, at
    float64.  ``inputs``: argument name -> (whole tensor, ``"nodes"`` or ``"edges"``), in the
    op's order; ``out``: what the output's rows are.  Returns the whole graph's output."""
    rows = {"nodes": part.nodes, "edges": part.edge_ids}
    whole = [t.clone().requires_grad_() for t, _ in inputs.values()]
    y = op(g, *whole, **kw)
    (y * cot).sum().backward()
    local = [t[rows[on]].clone().requires_grad_() for t, on in inputs.values()]
    yl = op(dg, *local, **kw)
    (yl * cot[rows[out]]).sum().backward()
    rep.check(name, yl, y[rows[out]], TOL64)
    for arg, a, b, (_, on) in zip(inputs, local, whole, inputs.values()):
        rep.check(f"{name} grad {arg}", a.grad, b.grad[rows[on]], TOL64)
    return y.detach()


def check_ops(rep: Report, g, part):
    dg = DistGraph(part)
    gen = torch.Generator().manual_seed(7)
    H, D, F = 3, 4, 5
    q = torch.randn(N, H, D, dtype=torch.float64, generator=gen)
    k = torch.randn(N, H, D, dtype=torch.float64, generator=gen)
    x = torch.randn(N, F, dtype=torch.float64, generator=gen)
    w = torch.rand(g.num_edges, dtype=torch.float64, generator=gen)
    gy = torch.randn(N, F, dtype=torch.float64, generator=gen)
    ga = torch.randn(g.num_edges, H, dtype=torch.float64, generator=gen)
    nodes, eids = part.nodes, part.edge_ids

    inputs = {"q": (q, "nodes"), "k": (k, "nodes")}
    compare_op(rep, "spmm", ops.spmm, g, dg, part, {"w": (w, "edges"), "x": (x, "nodes")}, gy)
    compare_op(rep, "edge_attention", ops.edge_attention, g, dg, part, inputs, ga, out="edges")
    # attention diffusion (k and x exchanged together)
    y = compare_op(rep, "attention_diffusion", ops.attention_diffusion, g, dg, part, {**inputs, "x": (x, "nodes")}, gy)
    # the reference backend through the same exchange
    yr = ops.attention_diffusion(dg, q[nodes], k[nodes], x[nodes], backend="reference")
    rep.check("attention_diffusion reference backend", yr, y[nodes], TOL64)
    # float32 (the kernels' working precision)
    y32 = ops.attention_diffusion(g, q.float(), k.float(), x.float())
    yl32 = ops.attention_diffusion(dg, q[nodes].float(), k[nodes].float(), x[nodes].float())
    rep.check("attention_diffusion float32", yl32, y32[nodes], 1e-5)
    # the attention options that are local to a target's row pass through (cosine, exp_kernel)
    for score in ("cosine", "exp_kernel"):
        kp = torch.tensor([1.3, 0.7], dtype=torch.float64) if score == "exp_kernel" else None
        kps = None if kp is None else kp.clone().requires_grad_()
        qs, ks, xs = q.clone().requires_grad_(), k.clone().requires_grad_(), x.clone().requires_grad_()
        y = ops.attention_diffusion(g, qs, ks, xs, score=score, kernel_params=kps)
        (y * gy).sum().backward()
        kpl = None if kp is None else kp.clone().requires_grad_()
        ql, kl, xl = (t[nodes].clone().requires_grad_() for t in (q, k, x))
        yl = ops.attention_diffusion(dg, ql, kl, xl, score=score, kernel_params=kpl)
        (yl * gy[nodes]).sum().backward()
        rep.check(f"attention_diffusion {score}", yl, y[nodes], TOL64)
        for name, gl, gs in (("q", ql, qs), ("k", kl, ks), ("x", xl, xs)):
            rep.check(f"attention_diffusion {score} grad {name}", gl.grad, gs.grad[nodes], TOL64)
        if kp is not None:  # a parameter shared by all ranks: its gradient is the sum of theirs
            rep.check(f"attention_diffusion {score} grad kernel_params", grads_sum([kpl.grad]), kps.grad, TOL64)
    # groups and shifts that span ranks: a source's out-edges, squareplus's global maximum
    for normalize, over in (("softmax", "source"), ("squareplus", "target"), ("squareplus", "source")):
        opt = dict(normalize=normalize, normalize_over=over)
        qs, ks, xs = q.clone().requires_grad_(), k.clone().requires_grad_(), x.clone().requires_grad_()
        a = ops.edge_attention(g, qs, ks, **opt)
        y = ops.attention_diffusion(g, qs, ks, xs, **opt)
        ((a * ga).sum() + (y * gy).sum()).backward()
        ql, kl, xl = (t[nodes].clone().requires_grad_() for t in (q, k, x))
        al = ops.edge_attention(dg, ql, kl, **opt)
        yl = ops.attention_diffusion(dg, ql, kl, xl, **opt)
        ((al * ga[eids]).sum() + (yl * gy[nodes]).sum()).backward()
        tag = f"{normalize} over {over}"
        rep.check(f"edge_attention {tag}", al, a[eids], TOL64)
        rep.check(f"attention_diffusion {tag}", yl, y[nodes], TOL64)
        for name, gl, gs in (("q", ql, qs), ("k", kl, ks), ("x", xl, xs)):
            rep.check(f"attention {tag} grad {name}", gl.grad, gs.grad[nodes], TOL64)
    wts = torch.rand(g.num_edges, dtype=torch.float64, generator=gen)
    rep.check("normalize_weights over source", dg.normalize_weights(wts[eids], "source"),
              g.normalize_weights(wts, "source")[eids], TOL64)
    st = dg.plan.stats
    rep.data["halo"] = {"owned": dg.num_nodes, "halo": dg.num_halo, **st}


def check_solve(rep: Report, g, part):
    """dopri5 on dx/dt = Āx - x: the same steps, NFE and solution as one process."""
    dg = DistGraph(part)
    gs = g.add_self_loops()
    wg = gs.row_normalize(torch.ones(gs.num_edges, dtype=torch.float64))
    dgs = dg.add_self_loops()
    wl = dgs.row_normalize(torch.ones(dgs.num_edges, dtype=torch.float64))
    gen = torch.Generator().manual_seed(11)
    x0 = torch.randn(N, 6, dtype=torch.float64, generator=gen)
    t = torch.tensor([0.0, 0.7, 2.0], dtype=torch.float64)
    one = graphode.solvers.solve(lambda t, y: ops.spmm(gs, wg, y) - y, x0, t, method="dopri5",
                                 rtol=1e-8, atol=1e-10)
    res = dsolvers.solve(lambda t, y: ops.spmm(dgs, wl, y) - y, x0[part.nodes], t, method="dopri5",
                         rtol=1e-8, atol=1e-10)
    rep.check("dopri5 solution", res.ys, one.ys[:, part.nodes], 1e-10)
    rep.equal("dopri5 nfe", res.stats.nfe, one.stats.nfe)
    rep.equal("dopri5 accepted", res.stats.n_accepted, one.stats.n_accepted)
    rep.equal("dopri5 rejected", res.stats.n_rejected, one.stats.n_rejected)
    # The error estimate is a small difference of stage values (~1e-8 of them here), so the
    # rounding of sums taken in another order (owned sources first, then the halo's) shows
    # in it at ~1e-7 relative, and in the proposed step sizes at the same level.
    rep.check("dopri5 step sizes", torch.tensor(res.stats.step_sizes), torch.tensor(one.stats.step_sizes), 1e-5)
    # a user's controller (PI coefficients, no norm of its own) gets the reducing norm
    opts = lambda: {"controller": graphode.solvers.PIController(pcoeff=0.3, icoeff=0.4)}  # noqa: E731
    one = graphode.solvers.solve(lambda t, y: ops.spmm(gs, wg, y) - y, x0, t, method="bosh3", rtol=1e-6,
                                 atol=1e-8, options=opts())
    res = dsolvers.solve(lambda t, y: ops.spmm(dgs, wl, y) - y, x0[part.nodes], t, method="bosh3", rtol=1e-6,
                         atol=1e-8, options=opts())
    rep.check("bosh3 PI controller solution", res.ys, one.ys[:, part.nodes], 1e-8)
    rep.equal("bosh3 PI controller nfe", res.stats.nfe, one.stats.nfe)
    rep.equal("bosh3 PI controller rejected", res.stats.n_rejected, one.stats.n_rejected)


def _grand_pair(g, part, variant, **kw):
    """The same GRAND (float64, no dropout) on the whole graph and on this rank's part."""
    from graphode.models import GRAND

    cfg = dict(variant=variant, hidden_dim=6, heads=2, attention_dim=4, time=1.5, input_dropout=0.0,
               dropout=0.0, rtol=1e-6, atol=1e-8, **kw)
    torch.manual_seed(5)
    one = GRAND(5, 3, g, **cfg).double()
    with torch.no_grad():  # away from the near-uniform initial attention, so the checks mean something
        for p in (one.attention.parameters() if one.attention is not None else ()):
            p.normal_(0, 0.5)
        one.odefunc.alpha_train.fill_(0.8)
        one.odefunc.beta_train.fill_(0.3)
    dist_model = GRAND(5, 3, DistGraph(part), **cfg).double()
    dist_model.load_state_dict(one.state_dict())
    return one, dist_model


def check_grand(rep: Report, g, part, variant, **kw):
    one, dm = _grand_pair(g, part, variant, **kw)
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(N, 5, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 3, (N,), generator=gen)
    tag = f"grand-{variant}" + ("-adjoint" if kw.get("adjoint") else "") + f"-{kw.get('method', 'dopri5')}"
    out = one(x)
    torch.nn.functional.cross_entropy(out, y, reduction="sum").div(N).backward()
    nodes = part.nodes
    out_l = dm(x[nodes])
    torch.nn.functional.cross_entropy(out_l, y[nodes], reduction="sum").div(N).backward()
    rep.check(f"{tag} logits", out_l, out[nodes], 1e-8)
    rep.equal(f"{tag} nfe", dm.nfe, one.nfe)
    rep.equal(f"{tag} nfe backward", dm.nfe_backward, one.nfe_backward)
    names = [n for n, p in one.named_parameters() if p.grad is not None]
    pd = dict(dm.named_parameters())
    got = grads_sum([pd[n].grad if pd[n].grad is not None else torch.zeros_like(pd[n]) for n in names])
    want = torch.cat([dict(one.named_parameters())[n].grad.reshape(-1) for n in names])
    rep.check(f"{tag} parameter gradients", got, want, 1e-7)


def check_training(rep: Report, g, method, model_name, cfg, tol):
    """One training step (forward, loss, backward, gradient all-reduce): loss and every
    parameter gradient equal the single-process trainer's."""
    from graphode.datasets import NodeDataset
    from graphode.distributed.train import DistTrainer, _part_dataset
    from graphode.models import build
    from graphode.train import Trainer, seed_everything

    r, w = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(N, 7, generator=gen)
    y = torch.randint(0, 3, (N,), generator=gen)
    u = torch.rand(N, generator=gen)
    full = NodeDataset("synthetic", x, y, g.edge_index, u < 0.3, (u >= 0.3) & (u < 0.6), u >= 0.6, 3)
    part = partition_graph(full.graph, w, method=method, seed=0).part(
        r, node_data={"x": x, "y": y, "train_mask": full.train_mask, "val_mask": full.val_mask,
                      "test_mask": full.test_mask})
    pds = _part_dataset(part, {"dataset": "synthetic", "num_classes": 3})
    seed_everything(0)
    one = build(model_name, full, cfg)
    seed_everything(0)
    dm = build(model_name, pds, cfg)
    rep.check(f"train {model_name} initial parameters",  # from the same seed (GCN's init bound from global sums)
              torch.cat([t.reshape(-1).float() for t in dm.state_dict().values()]),
              torch.cat([t.reshape(-1).float() for t in one.state_dict().values()]), 1e-7)
    logs_one = Trainer(one, full, cfg, seed=0).train_step(0)
    logs_d = DistTrainer(dm, pds, cfg, seed=0).train_step(0)
    rep.check(f"train {model_name} loss", torch.tensor(logs_d["loss"]), torch.tensor(logs_one["loss"]), tol)
    if "nfe" in logs_one:
        rep.equal(f"train {model_name} nfe", logs_d["nfe"], logs_one["nfe"])
    # the optimizer has stepped: compare the gradients and the updated parameters, all of them
    # relative to the largest entry (at GRAND's initial near-uniform attention the W_Q and
    # key-bias gradients are ~1e-8 and ~0: their own relative error is float32 noise)
    pd = dict(dm.named_parameters())
    names = [n for n, _ in one.named_parameters()]
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    rep.check(f"train {model_name} gradients", flat(pd[n].grad for n in names),
              flat(p.grad for _, p in one.named_parameters()), tol)
    rep.check(f"train {model_name} parameters after the step", flat(pd[n].detach() for n in names),
              flat(p.detach() for _, p in one.named_parameters()), tol)


def check_resume(rep: Report, g, method):
    """Checkpoints are per rank; a run resumed from them ends where the uninterrupted one
    does (dropout on, so each rank's random stream must be restored too)."""
    from graphode.distributed.train import DistTrainer, _part_dataset
    from graphode.models import build
    from graphode.train import seed_everything

    r, w = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(19)
    x, u = torch.randn(N, 7, generator=gen), torch.rand(N, generator=gen)
    nd = {"x": x, "y": torch.randint(0, 3, (N,), generator=gen), "train_mask": u < 0.5,
          "val_mask": u >= 0.5, "test_mask": u >= 0.5}
    pds = _part_dataset(partition_graph(g, w, method=method, seed=0).part(r, node_data=nd),
                        {"num_classes": 3})
    cfg = dict(layers=2, hidden=8, dropout=0.5, epochs=3)
    ck = os.path.join(os.environ["GRAPHODE_TEST_OUT"], "ck.pt")

    def run(epochs, **kw):
        seed_everything(0)
        m = build("gcn", pds, cfg)
        res = DistTrainer(m, pds, cfg, seed=0).fit(epochs=epochs, progress=False, **kw)
        return m, res

    full, res_full = run(3)
    run(2, checkpoint=ck)
    resumed, res = run(3, resume=ck, checkpoint=ck)
    flat = lambda m: torch.cat([p.detach().reshape(-1) for p in m.parameters()])  # noqa: E731
    rep.check("resume parameters", flat(resumed), flat(full), 0.0)
    rep.equal("resume history length", len(res["history"]), len(res_full["history"]))
    rep.equal("resume checkpoint file", os.path.exists(f"{ck}.rank{r}"), True)


def check_fit_authors(rep: Report, g, method):
    """Two epochs of GRAND-l with the authors' attention (squareplus over each source's
    out-edges) and their test integrator (evaluation past T, best step time): the same
    parameters, best epoch, accuracies and step time as one process."""
    from graphode.datasets import NodeDataset
    from graphode.distributed.train import DistTrainer, _part_dataset
    from graphode.models import build
    from graphode.train import Trainer, seed_everything

    r, w = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(23)
    x, u = torch.randn(N, 7, generator=gen), torch.rand(N, generator=gen)
    y = torch.randint(0, 3, (N,), generator=gen)
    full = NodeDataset("synthetic", x, y, g.edge_index, u < 0.4, (u >= 0.4) & (u < 0.7), u >= 0.7, 3)
    nd = {"x": x, "y": y, "train_mask": full.train_mask, "val_mask": full.val_mask, "test_mask": full.test_mask}
    pds = _part_dataset(partition_graph(full.graph, w, method=method, seed=0).part(r, node_data=nd),
                        {"num_classes": 3})
    cfg = dict(SMALL_GRAND, attention_normalize="squareplus", attention_normalize_over="source", key_bias=True,
               detach_source=True, eval_time_factor=2.0, eval_max_steps=30, epochs=2, optimizer="sgd", lr=0.5)
    # (SGD: Adam-type steps turn the ~0 gradients of the key bias into sign(rounding noise))
    res = []
    for ds, cls in ((full, Trainer), (pds, DistTrainer)):
        seed_everything(0)
        m = build("grand-l", ds, cfg)
        res.append((m, cls(m, ds, cfg, seed=0).fit(progress=False)))
    (one, r1), (dm, r2) = res
    flat = lambda m: torch.cat([p.detach().reshape(-1) for p in m.parameters()])  # noqa: E731
    rep.check("authors' GRAND-l: parameters after 2 epochs", flat(dm), flat(one), 1e-4)
    for k in ("best_epoch", "val_acc", "test_acc", "train_acc"):
        rep.equal(f"authors' GRAND-l: {k}", r2[k], r1[k])
    # the same step: its time (float32) may differ in the last bits, since the error norm's sum over
    # ranks rounds differently from one process's and the step sizes inherit that rounding
    st2, st1 = r2["history"][-1].get("step_time"), r1["history"][-1].get("step_time")
    assert st1 is not None and st2 is not None, (st1, st2)
    rep.check("authors' GRAND-l: step time of the best", torch.tensor(st2), torch.tensor(st1), 1e-6)


SMALL_GRAND = dict(hidden_dim=6, heads=2, attention_dim=4, time=1.0, input_dropout=0.0, dropout=0.0,
                   method="dopri5", rtol=1e-6, atol=1e-8, epochs=1)
CHECKS = {
    "ops": lambda rep, g, part, method: check_ops(rep, g, part),
    "solve": lambda rep, g, part, method: check_solve(rep, g, part),
    "grand-nl": lambda rep, g, part, method: check_grand(rep, g, part, "nl"),
    "grand-l-adjoint": lambda rep, g, part, method: check_grand(rep, g, part, "l", adjoint=True),
    "grand-nl-adjoint": lambda rep, g, part, method: check_grand(rep, g, part, "nl", adjoint=True),
    "grand-nl-adjoint-rk4": lambda rep, g, part, method: check_grand(rep, g, part, "nl", adjoint=True,
                                                                    method="rk4", step_size=0.25),
    "grand-laplacian": lambda rep, g, part, method: check_grand(rep, g, part, "laplacian"),
    "train-grand-l": lambda rep, g, part, method: check_training(rep, g, method, "grand-l", SMALL_GRAND, 1e-4),
    "train-grand-nl-adjoint": lambda rep, g, part, method: check_training(
        rep, g, method, "grand-nl", {**SMALL_GRAND, "adjoint": True}, 1e-4),
    "fit-grand-l-authors": lambda rep, g, part, method: check_fit_authors(rep, g, method),
    "resume": lambda rep, g, part, method: check_resume(rep, g, method),
    "train-grand-laplacian": lambda rep, g, part, method: check_training(
        rep, g, method, "grand-laplacian", SMALL_GRAND, 1e-4),
    "train-gcn": lambda rep, g, part, method: check_training(
        rep, g, method, "gcn", dict(layers=3, hidden=8, init="isometric-code", dropout=0.0, epochs=1), 1e-5),
}


def fail_or_hang(which, r, w, part):
    if r == w - 1:
        if which == "fail":
            raise RuntimeError("deliberate failure of the last rank")
        import time

        time.sleep(3600)  # hangs outside any collective
    dg = DistGraph(part)
    ops.spmm(dg, torch.ones(dg.num_edges), torch.ones(dg.num_nodes, 2))  # waits for the last rank


def main():
    """``python _dist_checks.py CHECK[,CHECK...] PARTITION_METHOD`` inside each rank."""
    which = sys.argv[1].split(",")
    method = sys.argv[2] if len(sys.argv) > 2 else "metis"
    torch.set_num_threads(1)
    r, w, g, part = setup(method)
    rep = Report(r)
    try:
        for name in which:
            if name in ("fail", "hang"):
                fail_or_hang(name, r, w, part)
            else:
                CHECKS[name](rep, g, part, method)
            rep.data[f"done {name}"] = True
        rep.write()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
