"""GRAND models (graphode.models.grand): shapes, gradients (with and without the
adjoint), training on Cora, implicit solver, regularisers, NFE budget, rewiring, configs."""
from __future__ import annotations

import glob
import os

import pytest
import torch
import torch.nn.functional as F

from graphode.models import build
from graphode.models.grand import GRAND, MaxNFEError, build_grand_laplacian, grand_kwargs
from graphode.train import fit, load_config, seed_everything

from test_train import synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


VARIANTS = ["grand-l", "grand-nl", "grand-nl-rw"]
SMALL = dict(hidden_dim=8, heads=2, attention_dim=8, time=1.0, method="rk4", step_size=0.5,
             input_dropout=0.0, dropout=0.0, gdc_k=8, lr=0.02, weight_decay=0.0, optimizer="adam")


@pytest.fixture(scope="module")
def small():
    return synthetic_dataset(n=60, f=8, c=3)


def make(name, ds, **over):
    cfg = {**SMALL, **over, "model": name}
    if name == "grand-laplacian":
        return build_grand_laplacian(ds, cfg)
    return build(name, ds, cfg)


@pytest.mark.parametrize("name", VARIANTS + ["grand-laplacian"])
def test_forward_shapes(small, name):
    torch.manual_seed(0)
    m = make(name, small)
    out = m(small.x)
    assert out.shape == (small.num_nodes, small.num_classes)
    assert m.nfe == 8  # rk4, 2 steps
    m.eval()
    with torch.no_grad():
        assert m(small.x).shape == out.shape


def test_initialisation(small):
    m = make("grand-nl", small)
    assert torch.all(m.attention.W_Q.weight == 1e-5) and torch.all(m.attention.W_K.weight == 1e-5)
    assert float(m.odefunc.alpha_train.detach()) == 0.0 and float(m.odefunc.beta_train.detach()) == 0.0
    assert m.graph.has_self_loops()
    m0 = make("grand-nl", small, self_loop_weight=0)
    assert not m0.graph.has_self_loops()
    assert make("grand-l", small, source_term=False).odefunc.beta_train is None


@pytest.mark.parametrize("adjoint", [False, True], ids=["backprop", "adjoint"])
@pytest.mark.parametrize("name", VARIANTS + ["grand-laplacian"])
def test_gradients_reach_every_parameter(small, name, adjoint):
    """With the authors' Cora attention (squareplus over sources) every parameter gets a
    gradient, the key bias included; with a softmax over targets the key bias cancels."""
    torch.manual_seed(1)
    m = make(name, small, adjoint=adjoint, method="dopri5", rtol=1e-6, atol=1e-6,
             attention_normalize="squareplus", attention_normalize_over="source")
    out = m(small.x)
    F.cross_entropy(out[small.train_mask], small.y[small.train_mask]).backward()
    for n, p in m.named_parameters():
        assert p.requires_grad
        assert p.grad is not None, f"{name} (adjoint={adjoint}): {n} got no gradient"
        assert float(p.grad.abs().max()) > 0, f"{name} (adjoint={adjoint}): {n} has a zero gradient"
    if adjoint:
        assert m.nfe_backward > 0
    if name != "grand-laplacian" and not adjoint:
        torch.manual_seed(1)
        m = make(name, small, method="dopri5", rtol=1e-6, atol=1e-6).double()
        out = m(small.x.double())
        F.cross_entropy(out[small.train_mask], small.y[small.train_mask]).backward()
        assert float(m.attention.W_K.bias.grad.abs().max()) < 1e-12
        assert float(m.attention.W_Q.bias.grad.abs().max()) > 1e-8


@pytest.mark.parametrize("name", ["grand-l", "grand-nl"])
def test_adjoint_gradients_equal_backprop(small, name):
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(2)
        m = make(name, small, adjoint=adjoint, method="dopri5", rtol=1e-9, atol=1e-9, time=0.7).double()
        with torch.no_grad():  # move away from the near-uniform start so attention matters
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
        (m(small.x.double()) ** 2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-7, msg=n)


def test_fixed_attention_equals_nonlinear_at_t0(small):
    """GRAND-l's Ā is GRAND-nl's Ā(x(0)): the vector fields agree at x0."""
    torch.manual_seed(3)
    ml = make("grand-l", small)
    mn = make("grand-nl", small)
    with torch.no_grad():
        for p in ml.attention.parameters():
            p.add_(0.5 * torch.randn_like(p))
        mn.load_state_dict(ml.state_dict())
        x0 = ml.encoder(small.x)
        w = ml.attention.edge_attention(ml.graph, x0).mean(1)
        ml.odefunc.set_fixed(w)
        ml.odefunc.set_x0(x0)
        mn.odefunc.set_x0(x0)
        t = torch.tensor(0.0)
        torch.testing.assert_close(ml.odefunc(t, x0), mn.odefunc(t, x0), rtol=1e-5, atol=1e-6)


def test_config_model_is_what_runs(small):
    with pytest.raises(ValueError, match="grand-l"):
        build("grand-nl", small, {**SMALL, "model": "grand-l"})
    with pytest.raises(ValueError, match="unknown ODE method"):
        make("grand-l", small, method="bogus")
    with pytest.raises(ValueError, match="attention_score"):
        make("grand-l", small, attention_score="bogus")
    with pytest.raises(ValueError, match="'attention_type' is now 'attention_score'"):
        make("grand-l", small, attention_type="scaled_dot")
    assert make("grand-nl", small).variant == "nl"
    assert make("grand-nl-rw", small).variant == "nl-rw"


def test_nfe_budget(small):
    m = make("grand-nl", small, method="rk4", step_size=0.1, max_nfe=10)
    with pytest.raises(MaxNFEError):
        m(small.x)
    from graphode.solvers import MaxNumStepsError

    m = make("grand-nl", small, method="dopri5", rtol=1e-12, atol=1e-12, time=5.0, max_num_steps=3)
    with torch.no_grad(), pytest.raises(MaxNumStepsError):
        m.attention.W_Q.weight.normal_()
        m(small.x)


@pytest.mark.parametrize("adjoint", [False, True], ids=["backprop", "adjoint"])
def test_regularisers(small, adjoint):
    torch.manual_seed(4)
    m = make("grand-nl", small, kinetic_energy=1.0, jacobian_norm2=0.5, adjoint=adjoint, method="rk4")
    out = m(small.x)
    reg = m.regularization_loss()
    assert reg is not None and float(reg) > 0
    (F.cross_entropy(out[small.train_mask], small.y[small.train_mask]) + reg).backward()
    assert all(p.grad is not None for p in m.parameters())
    # kinetic energy alone: compare with a fine quadrature of 0.5 * mean(f(x(t))^2)
    m = make("grand-l", small, kinetic_energy=1.0, method="rk4", step_size=0.01).double()
    m(small.x.double())
    ke = float(m.regularization_loss())
    m.eval()
    from graphode.solvers import odeint

    with torch.no_grad():
        x0 = m.encoder(small.x.double())
        m.odefunc.set_x0(x0)
        m.odefunc.set_fixed(m.attention.edge_attention(m.graph, x0).mean(1))
        ts = torch.linspace(0, 1.0, 201, dtype=torch.float64)
        xs = odeint(m.odefunc, x0, ts, method="rk4", options={"step_size": 0.005})
        vals = torch.stack([0.5 * m.odefunc(t, x).pow(2).mean() for t, x in zip(ts, xs)])
        quad = float(torch.trapezoid(vals, ts))
    assert abs(ke - quad) < 1e-3 * abs(quad)
    m.eval()
    with torch.no_grad():
        m(small.x.double())
    assert m.regularization_loss() is None  # regularisers run in training only


def test_nl_rw_prunes_by_attention(small):
    """The authors' hard attention: the GDC graph in their orientation (top-k entries per
    column of S: k out-edges per node), every training forward keeps the edges whose
    head-mean attention at x(0) is strictly above the (1 - keep) quantile over all edges
    (self loops included), evaluation diffuses over every edge."""
    torch.manual_seed(5)
    m = make("grand-nl-rw", small, attention_keep=0.5, gdc_k=10)
    assert torch.all(m.graph.out_degree == 10)  # GDC top-k (incl. the self loop), flipped
    with torch.no_grad():
        m.attention.W_Q.weight.normal_()
        m.attention.W_K.weight.normal_()
    m(small.x)
    g, p = m.graph, m.odefunc.graph
    assert p is not g and p.num_edges < g.num_edges
    a = m.attention.edge_attention(g, m.encode(small.x).detach()).mean(1)
    assert p.num_edges == int((a > torch.quantile(a, 0.5)).sum())
    m.eval()
    with torch.no_grad():
        m(small.x)
    assert m.odefunc.graph is g


def test_implicit_solver_variant_trains(small):
    seed_everything(0)
    cfg = {**SMALL, "model": "grand-l", "method": "implicit_euler", "step_size": 0.5, "time": 2.0,
           "epochs": 15, "lr": 0.05, "rtol": 1e-5, "atol": 1e-5}
    m = build("grand-l", small, cfg)
    r = fit(m, small, cfg, seed=0, progress=False)
    h = r["history"]
    assert h[-1]["loss"] < h[0]["loss"]
    assert r["val_acc"] > 0.6, r["val_acc"]
    assert r["nfe"] > 0


def test_semi_implicit_euler_matches_dense_solve(small):
    """implicit_euler steps solve (I - τ σ(α)(Ā - I)) x_{k+1} = x_k + τ β x0 exactly."""
    torch.manual_seed(7)
    m = make("grand-l", small, method="implicit_euler", step_size=0.5, time=1.0, rtol=1e-12,
             atol=1e-12).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    m.eval()
    x = small.x.double()
    with torch.no_grad():
        z = m._solve(m.encoder(x))
        x0 = m.encoder(x)
        A = m.graph.to_dense(m.attention.edge_attention(m.graph, x0).mean(1), dtype=torch.float64)
        a, b = torch.sigmoid(m.odefunc.alpha_train), m.odefunc.beta_train
        M = torch.eye(A.size(0), dtype=torch.float64) - 0.5 * a * (A - torch.eye(A.size(0), dtype=torch.float64))
        xk = x0
        for _ in range(2):
            xk = torch.linalg.solve(M, xk + 0.5 * b * x0)
    torch.testing.assert_close(z, xk, rtol=1e-8, atol=1e-9)
    with pytest.raises(ValueError, match="semi-implicit"):
        m.train()
        make("grand-l", small, method="implicit_euler", adjoint=True)(small.x)


def test_augmentation_is_a_noop(small):
    torch.manual_seed(6)
    a = make("grand-nl", small, augment=True)
    b = make("grand-nl", small, augment=False)
    assert a.attention.W_Q.in_features == 2 * b.attention.W_Q.in_features
    assert a(small.x).shape == b(small.x).shape


def test_packaged_configs(small):
    files = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "graphode", "configs", "grand", "*.yaml")))
    assert len(files) >= 7
    for f in files:
        cfg = load_config(f)
        kw = grand_kwargs(cfg)
        m = GRAND(small.num_features, small.num_classes, small.graph, variant="l", **kw)
        assert m.method == cfg["method"]
    cora = load_config(None, "grand-l", "cora")
    assert cora["model"] == "grand-l"
    kw = grand_kwargs(cora)
    # the authors' best_params_dict['Cora'] (graph-neural-pde), to full precision
    assert kw["hidden_dim"] == 80 and kw["time"] == 18.294754260552843 and kw["heads"] == 8
    assert kw["attention_dim"] == 128 and kw["method"] == "dopri5" and kw["source_term"]
    assert kw["input_dropout"] == 0.5 and kw["dropout"] == 0.046878964627763316 and kw["self_loop_weight"] == 1.0
    assert kw["atol"] == 821.9773048827274 * 1e-7 and kw["rtol"] == 821.9773048827274 * 1e-9
    assert kw["attention_normalize"] == "squareplus" and kw["attention_normalize_over"] == "source"
    assert kw["detach_source"] and kw["key_bias"] and not kw["hard_attention"] and kw["eval_time_factor"] == 3.0
    assert cora["optimizer"] == "adamax" and cora["lr"] == 0.022924849756740397
    assert cora["weight_decay"] == 0.00507685443154266
    assert cora["epochs"] == 99  # their `for epoch in range(1, 100)`
    # one source of defaults: a config without keys gives GRAND's own signature defaults
    import inspect

    sig = inspect.signature(GRAND.__init__).parameters
    for key, value in grand_kwargs({}).items():
        if key != "gdc":
            assert sig[key].default == value, key


@pytest.fixture(scope="module")
def cora():
    from graphode.datasets import load_dataset

    try:
        return load_dataset("cora")
    except FileNotFoundError as e:  # pragma: no cover - Cora ships with the package
        pytest.skip(str(e))


@pytest.mark.parametrize("name", ["grand-l"])
def test_few_epochs_on_cora_beat_chance(cora, name):
    """A few epochs with the Cora optimiser settings (cheap solver: rk4, T=3)."""
    cfg = load_config(None, "grand-l", "cora")
    cfg.update(model=name, method="rk4", step_size=1.0, time=3.0, hidden_dim=16, heads=1, attention_dim=8)
    seed_everything(0)
    m = build(name, cora, cfg)
    r = fit(m, cora, cfg, seed=0, epochs=5, progress=False)
    assert r["val_acc"] > 0.5, r  # chance is 1/7
    assert r["history"][-1]["loss"] < r["history"][0]["loss"]


def test_checkpoint_resume_grand_bit_identical(small, tmp_path):
    cfg = {**SMALL, "model": "grand-nl-rw", "input_dropout": 0.3, "dropout": 0.2, "attention_keep": 0.7}
    seed_everything(3)
    full = build("grand-nl-rw", small, cfg)
    r_full = fit(full, small, cfg, seed=3, epochs=6, progress=False)
    ck = str(tmp_path / "grand.pt")
    seed_everything(3)
    fit(build("grand-nl-rw", small, cfg), small, cfg, seed=3, epochs=3, checkpoint=ck, progress=False)
    seed_everything(3)
    resumed = build("grand-nl-rw", small, cfg)
    r_res = fit(resumed, small, cfg, seed=3, epochs=6, resume=ck, progress=False)
    for (n, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n
    assert r_full["val_acc"] == r_res["val_acc"] and r_full["best_epoch"] == r_res["best_epoch"]
    assert [h["loss"] for h in r_full["history"]] == [h["loss"] for h in r_res["history"]]


def _grads(m, ds, scale=1.0):
    out = m(ds.x)
    (scale * F.cross_entropy(out[ds.train_mask], ds.y[ds.train_mask])).backward()
    return {n: p.grad.clone() / scale for n, p in m.named_parameters()}


@pytest.mark.parametrize("semi_implicit", [True, False], ids=["operator", "newton-krylov"])
def test_implicit_euler_gradients_match_fine_explicit_solve(small, semi_implicit):
    """Gradients through implicit Euler (τ=0.01) agree with those through a fine rk4 solve.

    The small loss scale guards the backward Krylov tolerance: it must be relative to
    the cotangent, not the forward's absolute tolerance sized for the state."""
    over = dict(time=1.0, step_size=0.01, rtol=1e-6, atol=1e-6, input_dropout=0.0, dropout=0.0,
                ops_backend=None if semi_implicit else "reference")
    torch.manual_seed(8)
    ref = make("grand-l", small, method="rk4", **over)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    imp = make("grand-l", small, method="implicit_euler", semi_implicit=semi_implicit, **over)
    imp.load_state_dict(ref.state_dict())
    # a small loss scale: gradients must scale with it (cotangents much smaller than the
    # state are the normal case: Cora's loss is over 140 of 2708 nodes)
    g_ref, g_imp = _grads(ref, small, 1e-4), _grads(imp, small, 1e-4)
    for n, g in g_ref.items():
        assert float((g_imp[n] - g).norm()) <= 0.05 * float(g.norm()) + 1e-8, n
