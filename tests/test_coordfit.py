"""Coordinate-network training loop: plain steps, INT selection, adjust hooks, ESGD and L-BFGS paths."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import Tensor, nn

from nerf_inr_methods.coordfit import (
    FitHistory,
    coord_loss,
    fit,
    fit_iter,
    fit_step,
    optimization_step,
    psnr_from_mse,
    score_points,
)
from nerf_inr_methods.core.int_sampler import IntSampler, IntSamplerConfig
from nerf_inr_methods.core.int_selection import IntSchedule, select_topk


def expected_trained(sched: IntSchedule, n: int) -> list[int]:
    """Points trained per step: the subset chosen at the last selection step is reused until the next one."""
    sel, out, k = set(sched.selection_steps()), [], 0
    for t in range(sched.total_steps):
        if t in sel:
            k = sched.num_selected(t, n)
        out.append(k)
    return out


def tiny_mlp(seed: int = 0, d: int = 2, c: int = 1, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, c))


def toy_data(n: int = 64, d: int = 2, c: int = 1, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen) * 2 - 1
    y = 0.5 + 0.4 * torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, -1:])
    return x, y.repeat(1, c)


def test_loss_and_psnr() -> None:
    p, t = torch.zeros(4, 2), torch.full((4, 2), 0.1)
    assert coord_loss(p, t).item() == pytest.approx(0.01)
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    assert psnr_from_mse(0.04, data_range=2.0) == pytest.approx(20.0)
    bce = coord_loss(torch.zeros(3, 1), torch.ones(3, 1), "bce").item()
    assert bce == pytest.approx(0.693147, abs=1e-5)
    with pytest.raises(ValueError, match="loss must be one of"):
        coord_loss(p, t, "l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not match targets shape"):
        coord_loss(torch.zeros(4, 1), t)


def test_plain_fit_reduces_loss_and_logs() -> None:
    model = tiny_mlp()
    x, y = toy_data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    hist = fit(model, opt, 60, x, y, eval_fn=lambda m, s: {"mse": coord_loss(m(x), y).item()}, eval_steps=[0, 30, 60])
    assert isinstance(hist, FitHistory)
    assert len(hist.loss) == 60 and hist.loss[-1] < 0.5 * hist.loss[0]
    assert hist.points_trained[-1] == 60 * 64 and hist.points_scored[-1] == 0
    assert hist.eval_steps == [0, 30, 60] and hist.eval_series("mse")[-1] < hist.eval_series("mse")[0]
    assert hist.eval_time[0] == 0.0 and hist.eval_time[-1] == hist.time[-1]
    assert all(b >= a for a, b in zip(hist.time, hist.time[1:], strict=False))
    assert hist.psnr[0] == pytest.approx(psnr_from_mse(hist.loss[0]))
    assert set(hist.to_dict()) >= {"loss", "time", "eval_metrics"}


def test_int_fixed_candidates_scores_only_on_selection_steps() -> None:
    model = tiny_mlp()
    x, y = toy_data(n=100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sampler = IntSampler(IntSamplerConfig(max_interval=5), total_steps=40)  # the paper's INT: keep the subset
    sched = sampler.schedule
    sel_steps = set(sched.selection_steps())
    indices = None
    for step in range(40):
        expected = None
        if step in sel_steps:
            expected = select_topk(score_points(model, x, y), sched.ratio(step))
        res = fit_step(model, opt, x, y, step=step, sampler=sampler)
        assert res.selected == (step in sel_steps)
        assert res.num_trained == expected_trained(sched, 100)[step]
        assert res.num_scored == (100 if step in sel_steps else 0)
        if expected is not None:
            assert set(res.indices.tolist()) == set(expected.tolist())
        else:
            assert res.indices is indices  # reused between selection steps
        indices = res.indices


def test_int_fit_counts_match_schedule() -> None:
    model = tiny_mlp()
    x, y = toy_data(n=100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = IntSchedule(total_steps=50, max_interval=6)
    hist = fit(model, opt, 50, x, y, int_schedule=sched)
    assert [i for i, s in enumerate(hist.selected) if s] == list(sched.selection_steps())
    assert hist.points_scored[-1] == 100 * len(sched.selection_steps())
    assert hist.points_trained[-1] == sum(expected_trained(sched, 100))


def test_full_ratio_selection_scores_nothing_and_is_reused() -> None:
    model = tiny_mlp()
    x, y = toy_data(n=50)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    config = IntSamplerConfig(ratio_kind="r-cosine", interval_kind="decremental", max_interval=9)
    sampler = IntSampler(config, total_steps=100)
    res = fit_step(model, opt, x, y, step=0, sampler=sampler)  # ratio 1 at step 0
    assert res.selected and res.num_scored == 0 and res.num_trained == 50 and res.indices.tolist() == list(range(50))
    res = fit_step(model, opt, x, y, step=1, sampler=sampler)  # interval 9: reuse
    assert not res.selected and res.num_scored == 0 and res.num_trained == 50


def test_random_subset_control_same_sizes_no_scoring() -> None:
    model = tiny_mlp()
    x, y = toy_data(n=100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = IntSchedule(total_steps=30, max_interval=4)
    gen = torch.Generator().manual_seed(3)
    hist = fit(model, opt, 30, x, y, int_schedule=sched, random_subset=True, generator=gen)
    assert hist.points_scored[-1] == 0
    assert hist.points_trained[-1] == sum(expected_trained(sched, 100))
    with pytest.raises(ValueError, match="random_subset"):
        fit(model, opt, 5, x, y, random_subset=True)


def test_fresh_batches_select_on_the_current_batch_every_step() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # frozen model: the selection is checkable
    batches = [toy_data(n=40, seed=s) for s in range(12)]
    seen: list[tuple[int, Tensor]] = []

    def adjust(xs: Tensor, preds: Tensor, ys: Tensor) -> Tensor:
        seen.append((len(seen), xs.detach().clone()))
        return coord_loss(preds, ys)

    sched = IntSchedule(total_steps=12, max_interval=5)  # the interval is irrelevant for fresh batches
    hist = fit(model, opt, 12, batch_fn=lambda s: batches[s], int_schedule=sched, adjust=adjust)
    assert all(hist.selected)
    for step, xs in seen:
        bx, by = batches[step]
        top = select_topk(score_points(model, bx, by), sched.ratio(step))
        assert {tuple(r) for r in xs.tolist()} == {tuple(r) for r in bx[top].tolist()}
    assert hist.points_scored[-1] == 12 * 40


def test_adjust_hook_gradient_used_true_loss_logged() -> None:
    x, y = toy_data()
    # Surrogate = 3 * loss: with SGD the update is 3x the plain one, the logged loss stays the true loss.
    m1, m2 = tiny_mlp(1), tiny_mlp(1)
    o1, o2 = torch.optim.SGD(m1.parameters(), lr=0.1), torch.optim.SGD(m2.parameters(), lr=0.3)
    v1 = optimization_step(m1, o1, x, y)
    v2 = optimization_step(m2, o2, x, y, adjust=lambda xs, p, ys: 3.0 * coord_loss(p, ys) / 3.0)
    v3 = optimization_step(m2, o2, x, y, adjust=lambda xs, p, ys: 10.0 * coord_loss(p, ys))
    assert v1 == pytest.approx(v2)
    assert v3 == pytest.approx(coord_loss(tiny_mlp(1)(x), y).item(), rel=0.5)  # a true MSE, not 10x
    with pytest.raises(ValueError, match="scalar"):
        optimization_step(m1, o1, x, y, adjust=lambda xs, p, ys: p)


class FakeESGD(torch.optim.SGD):
    """Duck-typed ESGD recording how the loop calls it (curvature every other step)."""

    def __init__(self, params: object) -> None:
        super().__init__(params, lr=1e-3)
        self.calls: list[tuple[str, object]] = []
        self.count = 0
        self.ready = False

    def is_curvature_step(self) -> bool:
        return self.count % 2 == 0 or self.ready

    def should_create_graph(self) -> bool:
        return self.is_curvature_step() and not self.ready

    def accumulate_curvature(self, loss: Tensor) -> bool:
        if self.ready or not self.is_curvature_step():  # as ESGD: a no-op off curvature steps
            return False
        self.calls.append(("accumulate", loss.item()))
        self.ready = True
        return True

    def step(self, closure: object = None) -> None:  # type: ignore[override]
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        self.calls.append(("step", any(g is not None and g.grad_fn is not None for g in grads)))
        super().step()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = p.grad.detach()  # break the create_graph reference cycle, as ESGD does
        self.count += 1
        self.ready = False


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")
def test_esgd_protocol_standard_and_adjusted() -> None:
    x, y = toy_data()
    model = tiny_mlp()
    opt = FakeESGD(model.parameters())
    for _ in range(2):
        optimization_step(model, opt, x, y)
    # Standard mode: the curvature step's grads carry a graph, the other step's do not.
    assert opt.calls == [("step", True), ("step", False)]
    opt.calls.clear()
    true = [coord_loss(model(x), y).item()]
    optimization_step(model, opt, x, y, adjust=lambda xs, p, ys: 5.0 * coord_loss(p, ys))
    true.append(coord_loss(model(x), y).item())
    optimization_step(model, opt, x, y, adjust=lambda xs, p, ys: 5.0 * coord_loss(p, ys))
    assert opt.calls[0][0] == "accumulate" and opt.calls[0][1] == pytest.approx(true[0])  # curvature from true loss
    assert opt.calls[1:] == [("step", False), ("step", False)]  # no accumulate on the non-curvature step


def test_real_esgd_curvature_comes_from_true_loss() -> None:
    esgd = pytest.importorskip("nerf_inr_methods.core.esgd")
    x, y = toy_data()
    states = []
    for adjust in (None, lambda xs, p, ys: 7.0 * coord_loss(p, ys)):
        model = tiny_mlp(2)
        opt = esgd.ESGD(model.parameters(), lr=1e-3, generator=torch.Generator().manual_seed(0))
        optimization_step(model, opt, x, y, adjust=adjust)
        states.append([opt.state[p]["exp_avg_d"].clone() for p in model.parameters()])
    for a, b in zip(*states, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-12)


def test_lbfgs_closure_path() -> None:
    model = tiny_mlp()
    x, y = toy_data()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5, history_size=5)
    hist = fit(model, opt, 8, x, y)
    assert hist.loss[-1] < hist.loss[0]
    with pytest.raises(ValueError, match="LBFGS"):
        optimization_step(model, opt, x, y, adjust=lambda xs, p, ys: coord_loss(p, ys))


def test_bce_occupancy_and_probability_scores() -> None:
    model = tiny_mlp(c=1, d=3)
    x = torch.rand(80, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    y = (x.norm(dim=-1, keepdim=True) < 0.4).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    hist = fit(model, opt, 20, x, y, loss="bce", int_schedule=IntSchedule(20, max_interval=3))
    assert all(p is None for p in hist.psnr) and hist.loss[-1] < hist.loss[0]
    s = score_points(model, x, y, loss="bce")
    assert torch.allclose(s, (torch.sigmoid(model(x)) - y).abs().squeeze(-1).detach())


def test_eval_time_excluded_from_clock() -> None:
    model = tiny_mlp()
    x, y = toy_data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def slow_eval(m: nn.Module, s: int) -> dict[str, float]:
        time.sleep(0.05)
        return {"s": float(s)}

    start = time.perf_counter()
    hist = fit(model, opt, 5, x, y, eval_fn=slow_eval, eval_steps=range(6))
    wall = time.perf_counter() - start
    assert wall - hist.time[-1] >= 6 * 0.05  # the six evaluations' sleeps are outside the training clock
    assert hist.time[-1] > 0 and hist.eval_time == [0.0, *hist.time]


def test_fit_iter_lockstep_matches_fit() -> None:
    x, y = toy_data()
    hist_a = fit(tiny_mlp(4), torch.optim.SGD(tiny_mlp(4).parameters(), lr=0.0), 3, x, y)  # shape check only
    assert len(hist_a.loss) == 3
    models = [tiny_mlp(5), tiny_mlp(5)]
    runs = [
        fit_iter(m, torch.optim.Adam(m.parameters(), lr=1e-2), 10, x, y, int_schedule=IntSchedule(10, max_interval=2))
        for m in models
    ]
    for _ in range(10):
        hists = [next(r) for r in runs]
    ref_model = tiny_mlp(5)
    ref = fit(
        ref_model,
        torch.optim.Adam(ref_model.parameters(), lr=1e-2),
        10,
        x,
        y,
        int_schedule=IntSchedule(10, max_interval=2),
    )
    assert hists[0].loss == hists[1].loss == ref.loss
    with pytest.raises(StopIteration):
        next(runs[0])
    with pytest.raises(ValueError, match="total_steps"):
        fit_iter(models[0], torch.optim.Adam(models[0].parameters()), 0, x, y)  # validated eagerly


def test_bad_inputs_raise_clear_errors() -> None:
    model = tiny_mlp()
    x, y = toy_data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="either coords and targets"):
        fit(model, opt, 5, x, y, batch_fn=lambda s: (x, y))
    with pytest.raises(ValueError, match="either coords and targets"):
        fit(model, opt, 5)
    with pytest.raises(ValueError, match="int_schedule.total_steps"):
        fit(model, opt, 5, x, y, int_schedule=IntSchedule(6))
    with pytest.raises(ValueError, match="same n"):
        fit(model, opt, 5, x, y[:3])
    with pytest.raises(ValueError, match="coords must be"):
        fit(model, opt, 5, x[:, 0], y)
    with pytest.raises(ValueError, match="eval_steps"):
        fit(model, opt, 5, x, y, eval_fn=lambda m, s: {}, eval_steps=[7])
    with pytest.raises(ValueError, match="does not match"):
        fit(model, opt, 5, x, y.repeat(1, 2))


@pytest.mark.parametrize("name", ["soft", "error-map", "two-forward"])
def test_new_samplers_train_and_count_honestly(name: str) -> None:
    model = tiny_mlp()
    x, y = toy_data(n=100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    config = IntSamplerConfig(sampler=name, max_interval=4, reuse="rerank")  # no guard: exact counts
    sampler = IntSampler(config, 40, num_points=100, num_cells=25)
    hist = fit(model, opt, 40, x, y, sampler=sampler, cells_fn=lambda c: torch.arange(c.shape[0]) // 4)
    assert hist.loss[-1] < hist.loss[0]
    k_total = sum(sampler.schedule.num_selected(t, 100) for t in range(40))
    assert hist.points_trained[-1] == k_total
    if name == "error-map":
        assert hist.points_scored[-1] == 0 and bool((sampler.error_map_step >= 0).any())
    elif name == "two-forward":
        expected = sum(min(100, math.ceil(2 * sampler.schedule.num_selected(t, 100))) for t in range(40))
        assert hist.points_scored[-1] == expected and all(hist.selected)
    else:
        assert hist.points_scored[-1] == 100 * len(sampler.schedule.selection_steps())


def test_importance_weights_reach_the_loss() -> None:
    x, y = toy_data(n=60)
    config = IntSamplerConfig(sampler="soft", ratio_kind="constant", r0=0.25, alpha=1.0, alpha_warmup=0.0)
    model = tiny_mlp(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reference = tiny_mlp(3)
    res = fit_step(model, opt, x, y, step=0, sampler=IntSampler(config, 10))
    w = res.selection.weights
    assert w is not None and not torch.allclose(w, torch.ones_like(w))
    weighted = coord_loss(reference(x[res.indices]), y[res.indices], weights=w)
    weighted.backward()
    with torch.no_grad():
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.allclose(p, q - 0.1 * q.grad, atol=1e-6)  # SGD moved along the weighted loss
    assert res.loss == pytest.approx(coord_loss(reference(x[res.indices]), y[res.indices]).item(), rel=1e-5)
    with pytest.raises(ValueError, match="adjust hook"):
        optimization_step(model, opt, x, y, adjust=lambda xs, p, ys: coord_loss(p, ys), weights=torch.ones(60))


def test_sampler_must_match_the_run() -> None:
    model = tiny_mlp()
    x, y = toy_data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="fresh_candidates"):
        fit(model, opt, 5, batch_fn=lambda s: (x, y), sampler=IntSampler(IntSamplerConfig(), 5))
    with pytest.raises(ValueError, match="sampler.total_steps"):
        fit(model, opt, 5, x, y, sampler=IntSampler(IntSamplerConfig(), 6))
    with pytest.raises(TypeError, match="unknown fit option"):
        fit(model, opt, 5, x, y, int_schedul=IntSchedule(5))
