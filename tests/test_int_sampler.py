"""The INT sampler object (core/int_sampler.py): pools, the five samplers, the no-starvation guard, the error map,
importance weights and exact state round trips."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from nerf_inr_methods.core.int_sampler import (
    IntSampler,
    IntSamplerConfig,
    PoolCandidates,
    SamplerOptionError,
    drawing_probabilities,
    grid_cells,
    importance_sampling_gain,
    inclusion_probabilities,
    voxel_cells,
    weighted_mse,
)
from nerf_inr_methods.core.int_selection import num_selected


def fixed_errors(n: int, seed: int = 0) -> Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed))


def scorer(errors: Tensor, log: list | None = None):
    def score(positions: Tensor) -> Tensor:
        if log is not None:
            log.append(positions.clone())
        return errors[positions]

    return score


def run(sampler: IntSampler, steps: range, n: int, fresh_seed: int | None = None, errors_seed: int = 0) -> list:
    """Drive a sampler: fixed candidates (arange ids) or fresh pools of random ids; errors are a fixed function of
    the id (``fixed_errors``), and the training forward reports them back."""
    table = fixed_errors(10 * n, errors_seed)
    out = []
    for step in steps:
        if fresh_seed is None:
            ids = torch.arange(n)
        else:
            ids = torch.randperm(10 * n, generator=torch.Generator().manual_seed(fresh_seed + step))[:n]
        sel = sampler.select(
            step,
            lambda ids=ids: PoolCandidates(n, ids=ids, cells=ids // 4),
            lambda pos: table[sampler.pool.ids[pos]],  # the pool is installed before any scoring
        )
        trained_ids = sampler.pool.ids[sel.indices]
        sampler.record(sel, table[trained_ids] * 0.9)
        out.append((step, trained_ids.clone(), None if sel.weights is None else sel.weights.clone(), sel.num_scored))
    return out


def test_config_errors_name_the_field() -> None:
    for kwargs, field in [
        (dict(sampler="top"), "sampler"),
        (dict(alpha=1.5), "alpha"),
        (dict(uniform_share=-0.1), "uniform_share"),
        (dict(score_factor=0.5), "score_factor"),
        (dict(max_skips=0), "max_skips"),
        (dict(r0=0.0), "r0"),
        (dict(reuse="never"), "reuse"),
        (dict(error_map_max_age=0), "error_map_max_age"),
    ]:
        with pytest.raises(SamplerOptionError) as info:
            IntSamplerConfig(**kwargs)
        assert info.value.field == field and str(info.value).startswith(field)
    with pytest.raises(ValueError, match="num_cells"):
        IntSampler(IntSamplerConfig(sampler="error-map"), 10)


def test_int_rerank_trains_topk_of_refreshed_pool_scores() -> None:
    sampler = IntSampler(IntSamplerConfig(reuse="rerank", max_interval=4), total_steps=20)
    errors = fixed_errors(50)
    scored: list = []
    sel = sampler.select(0, lambda: PoolCandidates(50), scorer(errors, scored))
    k = num_selected(50, 0.2)
    assert sel.num_scored == 50 and sel.new_pool and sel.weights is None
    assert set(sel.indices.tolist()) == set(torch.topk(errors, k).indices.tolist())
    sampler.record(sel, torch.zeros(k))  # trained points now look solved: the next step takes the next k
    sampler.pool.step = 1  # keep the pool (interval 1 in stage 0)
    nxt = sampler.select(1, lambda: PoolCandidates(50), scorer(errors))
    assert nxt.num_scored == 0 and not nxt.new_pool
    assert set(nxt.indices.tolist()) == set(torch.topk(errors, 2 * k).indices.tolist()) - set(sel.indices.tolist())


def test_random_scores_nothing_and_follows_its_generator() -> None:
    picks = []
    for _ in range(2):
        sampler = IntSampler(IntSamplerConfig(sampler="random", seed=7), total_steps=10)
        sel = sampler.select(0, lambda: PoolCandidates(100), lambda pos: pytest.fail("random must not score"))
        picks.append(sel.indices)
        assert sel.num_scored == 0 and len(set(sel.indices.tolist())) == num_selected(100, 0.2)
    assert torch.equal(picks[0], picks[1])


def test_inclusion_probabilities() -> None:
    uniform = torch.full((40,), 1 / 40)
    assert torch.allclose(inclusion_probabilities(uniform, 10), torch.full((40,), 0.25, dtype=torch.float64))
    q = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    pi = inclusion_probabilities(q, 3)
    assert float(pi.sum()) == pytest.approx(3.0, rel=1e-6) and bool((pi <= 1).all())
    # Monte Carlo of torch.multinomial without replacement: the approximation is within a few percent.
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(6)
    for _ in range(4000):
        counts[torch.multinomial(q, 3, replacement=False, generator=gen)] += 1
    assert torch.allclose(counts / 4000, pi.float(), atol=0.06)


def test_drawing_probabilities_mix_errors_with_a_uniform_share() -> None:
    q = drawing_probabilities(torch.tensor([0.0, 1.0, 3.0]), uniform_share=0.3)
    assert torch.allclose(q, torch.tensor([0.1, 0.275, 0.625], dtype=torch.float64))
    squared = drawing_probabilities(torch.tensor([1.0, 3.0]), uniform_share=0.0, error_power=2.0)
    assert torch.allclose(squared, torch.tensor([0.1, 0.9], dtype=torch.float64))
    for no_signal in (torch.zeros(4), torch.tensor([1.0, float("inf"), 0.0, 0.0])):
        assert torch.equal(drawing_probabilities(no_signal), torch.full((4,), 0.25, dtype=torch.float64))


def test_importance_sampling_gain_is_one_for_uniform_and_the_moment_ratio_for_error_proportional() -> None:
    m = fixed_errors(1000) ** 3
    uniform = torch.full((1000,), 1e-3)
    assert importance_sampling_gain(m, uniform) == pytest.approx(1.0)
    best = importance_sampling_gain(m, m / m.sum())
    assert best == pytest.approx(float((m.double() ** 2).mean() / m.double().mean() ** 2))
    mixed = importance_sampling_gain(m, drawing_probabilities(m, uniform_share=0.2))
    assert 1.0 < mixed < best  # a uniform share gives up part of the gain
    assert importance_sampling_gain(torch.ones(10), torch.full((10,), 0.1)) == pytest.approx(1.0)  # flat error
    # the gain is a variance ratio: check it against the sampled second moments
    draws = torch.multinomial(m / m.sum(), 20000, replacement=True, generator=torch.Generator().manual_seed(1))
    weighted = m[draws] / (1000 * (m / m.sum())[draws])
    assert float((m**2).mean() / (weighted**2).mean()) == pytest.approx(best, rel=1e-4)


def test_soft_draws_by_error_with_warmed_up_weights() -> None:
    config = IntSamplerConfig(
        sampler="soft", ratio_kind="constant", uniform_share=0.0, alpha=1.0, alpha_warmup=0.5, reuse="rerank"
    )
    sampler = IntSampler(config, total_steps=10)
    errors = torch.cat([torch.full((10,), 1.0), torch.full((90,), 0.01)])  # 10 hard points hold 92% of the mass
    sel = sampler.select(0, lambda: PoolCandidates(100), scorer(errors))
    assert sel.num_scored == 100 and sel.alpha == 0.0 and sel.weights is None
    assert len(set(sel.indices.tolist())) == 20 and set(range(10)) <= set(sel.indices.tolist())
    assert sampler.alpha_at(5) == 1.0 and sampler.alpha_at(2) == pytest.approx(0.4)
    sampler.pool.step = 5
    sel = sampler.select(5, lambda: PoolCandidates(100), scorer(errors))  # alpha 1: importance weights
    w = sel.weights
    assert w is not None and w.shape == (20,) and float(w.mean()) == pytest.approx(1.0, rel=1e-5)
    hard = sel.indices < 10
    assert float(w[hard].max()) < float(w[~hard].min())  # likely points weigh less


def test_error_map_scores_nothing_prefers_unseen_and_high_cells() -> None:
    config = IntSamplerConfig(sampler="error-map", r0=0.1, ratio_kind="constant", uniform_share=0.0, alpha=0.0)
    sampler = IntSampler(config, total_steps=50, num_cells=10)
    cells = torch.arange(100) // 10  # 10 cells of 10 points
    sel = sampler.select(0, lambda: PoolCandidates(100, cells=cells), lambda pos: pytest.fail("no scoring"))
    assert sel.num_scored == 0 and sel.new_pool  # a new pool every step
    # Write errors: cell 3 high, every other cell low; never-seen cells do not exist any more.
    sampler.record(sel, torch.where(cells[sel.indices] == 3, 1.0, 0.0))
    written = set(cells[sel.indices].tolist())
    for c in range(10):
        if c not in written:
            sampler._write_error_map(torch.tensor([c]), torch.tensor([1.0 if c == 3 else 0.0]), 0)
    sel = sampler.select(1, lambda: PoolCandidates(100, cells=cells), lambda pos: pytest.fail("no scoring"))
    assert set(cells[sel.indices].tolist()) == {3}
    # EMA: a second write blends with the first.
    sampler._write_error_map(torch.tensor([3]), torch.tensor([0.0]), 1)
    assert float(sampler.error_map[3]) == pytest.approx(0.5)
    # Stale cells count as unseen (the map's maximum over fresh cells).
    stale = IntSampler(IntSamplerConfig(sampler="error-map", error_map_max_age=5), total_steps=50, num_cells=3)
    stale._write_error_map(torch.tensor([0, 1, 2]), torch.tensor([0.2, 0.4, 0.1]), 0)
    stale._write_error_map(torch.tensor([0, 1]), torch.tensor([0.2, 0.4]), 8)
    assert stale._error_map_values(torch.tensor([0, 1, 2]), 10).tolist() == pytest.approx([0.2, 0.4, 0.4])


def test_two_forward_scores_a_random_subset_and_trains_its_hardest() -> None:
    config = IntSamplerConfig(sampler="two-forward", ratio_kind="constant", r0=0.1, score_factor=3.0)
    sampler = IntSampler(config, total_steps=10, fresh_candidates=True)
    errors = fixed_errors(200)
    scored: list = []
    sel = sampler.select(0, lambda: PoolCandidates(200), scorer(errors, scored))
    k = num_selected(200, 0.1)
    assert sel.num_scored == 3 * k == scored[0].numel() and sel.indices.numel() == k
    candidates = scored[0]
    assert set(sel.indices.tolist()) == set(candidates[torch.topk(errors[candidates], k).indices].tolist())


@pytest.mark.parametrize("name", ["int", "random", "soft", "error-map", "two-forward"])
def test_no_point_starves(name: str) -> None:
    """A fixed candidate set of 60 points with a fixed hard region: every point is trained within max_skips + 1
    pools, whatever the sampler."""
    config = IntSamplerConfig(
        sampler=name,
        ratio_kind="constant",
        r0=0.1,
        interval_kind="dense",
        reuse="rerank",
        max_skips=3,
        uniform_share=0.0,
    )
    sampler = IntSampler(config, total_steps=100, num_points=60, num_cells=60)
    errors = torch.cat([torch.ones(10), torch.full((50,), 1e-4)])
    last_trained = torch.full((60,), -1)
    worst_gap = 0
    for step in range(60):
        sel = sampler.select(
            step, lambda: PoolCandidates(60, ids=torch.arange(60), cells=torch.arange(60)), scorer(errors)
        )
        sampler.record(sel, errors[sel.indices])
        trained = sampler.pool.ids[sel.indices]
        if step >= 10:
            gaps = step - last_trained
            worst_gap = max(worst_gap, int(gaps.max()))
        last_trained[trained] = step
    # Forced after 3 skips; when more points are forced than k = 6 fit in a step, the longest-waiting go first.
    assert bool((last_trained >= 0).all()) and worst_gap <= 60 // 6 + 3 + 1


@pytest.mark.parametrize("name", ["int", "random", "soft", "error-map", "two-forward"])
def test_state_round_trip_gives_the_same_selections(name: str) -> None:
    config = IntSamplerConfig(sampler=name, max_interval=4, reuse="rerank", max_skips=2, alpha_warmup=0.2)

    def make() -> IntSampler:
        return IntSampler(config, 40, num_points=2000, num_cells=500, fresh_candidates=name != "int")

    straight = run(make(), range(40), 100, fresh_seed=1)
    first = make()
    head = run(first, range(20), 100, fresh_seed=1)
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    tail = run(resumed, range(20, 40), 100, fresh_seed=1)
    for (s1, ids1, w1, n1), (s2, ids2, w2, n2) in zip(straight, head + tail, strict=True):
        assert s1 == s2 and torch.equal(ids1, ids2) and n1 == n2, s1
        assert (w1 is None) == (w2 is None) and (w1 is None or torch.allclose(w1, w2)), s1
    assert any(w is not None for *_, w, _ in straight) == (name in ("soft", "error-map"))


def test_resume_with_another_schedule_is_refused() -> None:
    sampler = IntSampler(IntSamplerConfig(), 300)
    run(sampler, range(3), 20)
    other = IntSampler(IntSamplerConfig(), 170)
    with pytest.raises(ValueError, match=r"total_steps 300 \(now 170\)"):
        other.load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError, match="sampler 'int' \\(now 'soft'\\)"):
        IntSampler(IntSamplerConfig(sampler="soft"), 300).load_state_dict(sampler.state_dict())


def test_helpers() -> None:
    pred, target = torch.zeros(4, 3), torch.ones(4, 3)
    target[0] = 3.0
    assert float(weighted_mse(pred, target)) == pytest.approx(torch.nn.functional.mse_loss(pred, target).item())
    assert float(weighted_mse(pred, target, torch.tensor([0.0, 2.0, 1.0, 1.0]))) == pytest.approx(1.0)
    idx = torch.tensor([[0, 0, 0], [0, 3, 7], [1, 4, 0]])
    assert grid_cells(idx, height=8, width=8, cell_size=4).tolist() == [0, 1, 6]
    assert voxel_cells(torch.tensor([[-0.5, -0.5, -0.5], [0.49, 0.49, 0.49], [9.0, 0.0, -9.0]]), 4).tolist() == [
        0,
        63,
        3 * 16 + 2 * 4 + 0,
    ]
    assert math.isclose(IntSampler(IntSamplerConfig(sampler="soft", alpha=0.5), 100).alpha_at(5), 0.25)
