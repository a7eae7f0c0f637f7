"""INT core: scores, top-k selection and the ratio / interval schedules (methods.md section 1)."""

from __future__ import annotations

import math

import pytest
import torch

from nerf_inr_methods.core.int_selection import (
    IntSchedule,
    int_scores,
    interval_at,
    is_selection_step,
    num_selected,
    ratio_at,
    select_random,
    select_topk,
    selection_steps,
    stage_of,
)


def test_int_scores_sum_abs_over_channels_no_grad() -> None:
    pred = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 0.0], [0.5, 1.5, 1.0]])
    scores = int_scores(pred, target)
    assert torch.allclose(scores, torch.tensor([3.0, 1.0]))
    assert not scores.requires_grad
    assert torch.allclose(int_scores(torch.tensor([1.0, -2.0]), torch.zeros(2)), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="same shape"):
        int_scores(torch.zeros(3, 2), torch.zeros(3, 1))


def test_select_topk_returns_exactly_the_k_largest() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(1000, generator=gen)
    for ratio in (0.001, 0.2, 0.28, 0.5, 0.92, 1.0):
        idx = select_topk(scores, ratio)
        k = math.ceil(round(ratio * 1000, 9))
        assert idx.shape == (k,) and idx.dtype == torch.long
        assert len(set(idx.tolist())) == k
        assert set(idx.tolist()) == set(torch.argsort(scores, descending=True)[:k].tolist())


def test_num_selected_ceil_and_float_error() -> None:
    assert num_selected(100, 0.28) == 28  # 0.28 * 100 = 28.000000000000004 in floating point
    assert num_selected(10, 0.25) == 3  # ceil(2.5)
    assert num_selected(3, 0.01) == 1  # at least one point
    assert num_selected(1, 0.2) == 1
    assert num_selected(0, 0.5) == 0
    assert num_selected(7, 1.0) == 7


def test_select_topk_edge_cases_and_bad_ratio() -> None:
    assert select_topk(torch.tensor([5.0]), 0.2).tolist() == [0]
    assert sorted(select_topk(torch.tensor([1.0, 3.0, 2.0]), 1.0).tolist()) == [0, 1, 2]
    assert select_topk(torch.tensor([1.0, 3.0, 2.0]), 0.3).tolist() == [1]
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            select_topk(torch.rand(10), bad)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        select_topk(torch.rand(4, 2), 0.5)


def test_select_random_size_and_uniqueness() -> None:
    idx = select_random(50, 0.2, generator=torch.Generator().manual_seed(1))
    assert idx.shape == (10,) and len(set(idx.tolist())) == 10 and int(idx.max()) < 50


def test_step_ratio_matches_methods_md() -> None:
    total = 1000
    expected = [0.20, 0.28, 0.36, 0.44, 0.52, 0.60, 0.68, 0.76, 0.84, 0.92]
    got = [ratio_at(s * 100 + 50, total, "step", 0.2) for s in range(10)]
    assert got == pytest.approx(expected)
    assert ratio_at(99, total, "step") == pytest.approx(0.20)
    assert ratio_at(100, total, "step") == pytest.approx(0.28)
    assert ratio_at(999, total, "step") == pytest.approx(0.92)


def test_cosine_ratios_and_constant() -> None:
    assert ratio_at(0, 100, "cosine", 0.2) == pytest.approx(0.2)
    assert ratio_at(50, 100, "cosine", 0.2) == pytest.approx(0.6)
    assert ratio_at(99, 100, "cosine", 0.2) == pytest.approx(1.0, abs=1e-3)
    assert ratio_at(0, 100, "r-cosine", 0.2) == pytest.approx(1.0)
    assert ratio_at(99, 100, "r-cosine", 0.2) == pytest.approx(0.2, abs=1e-3)
    assert ratio_at(37, 100, "constant", 0.3) == 0.3
    with pytest.raises(ValueError, match="ratio kind"):
        ratio_at(0, 100, "linear", 0.2)  # type: ignore[arg-type]


def test_interval_schedules_match_methods_md() -> None:
    total = 1000
    inc = [interval_at(s * 100, total, "incremental", 90) for s in range(10)]
    assert inc == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert [interval_at(s * 100, total, "decremental", 90) for s in range(10)] == inc[::-1]
    assert all(interval_at(t, total, "dense", 90) == 1 for t in range(0, total, 37))
    assert all(interval_at(t, total, "constant", 4) == 4 for t in range(0, total, 37))
    # Scaled maximum for short runs: 1 -> 10.
    assert [interval_at(s * 10, 100, "incremental", 10) for s in range(10)] == [1, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="interval kind"):
        interval_at(0, 100, "sparse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_interval"):
        interval_at(0, 100, "incremental", 0)


def test_stages_are_equal_tenths() -> None:
    assert [stage_of(t, 1000) for t in (0, 99, 100, 999)] == [0, 0, 1, 9]
    assert stage_of(6, 7) == 8  # fewer steps than stages: stages are skipped, never exceeded
    with pytest.raises(ValueError, match="step"):
        stage_of(-1, 10)
    with pytest.raises(ValueError, match="total_steps"):
        stage_of(0, 0)


@pytest.mark.parametrize("kind", ["incremental", "decremental", "dense", "constant"])
@pytest.mark.parametrize("total", [1, 7, 100, 1003])
def test_selection_steps_follow_the_interval_rule(kind: str, total: int) -> None:
    steps = selection_steps(total, kind, 90)
    # Reference: simulate "re-select when steps since the last selection reach the current interval".
    ref, last = [0], 0
    for t in range(1, total):
        if t - last >= interval_at(t, total, kind, 90):
            ref.append(t)
            last = t
    assert list(steps) == ref
    assert all(is_selection_step(t, total, kind, 90) == (t in set(ref)) for t in range(total))


def test_constant_interval_selects_every_max_interval_steps() -> None:
    assert selection_steps(18750, "constant", 4) == tuple(range(0, 18750, 4))


def test_incremental_selection_counts() -> None:
    steps = selection_steps(1000, "incremental", 90)
    assert steps[:100] == tuple(range(100))  # stage 0: every step
    assert steps[100:102] == (109, 119)  # stage 1: every 10 steps after the last stage-0 selection
    assert len(steps) < 130


def test_int_schedule_dataclass() -> None:
    sched = IntSchedule(total_steps=1000)
    assert (sched.ratio_kind, sched.r0, sched.interval_kind, sched.max_interval) == ("step", 0.2, "incremental", 90)
    assert sched.ratio(150) == pytest.approx(0.28)
    assert sched.interval(150) == 10
    assert sched.num_selected(150, 100) == 28
    assert sched.is_selection_step(0) and sched.is_selection_step(109) and not sched.is_selection_step(105)
    assert sched.selection_steps() == selection_steps(1000, "incremental", 90)
    with pytest.raises(ValueError, match="r0"):
        IntSchedule(total_steps=10, r0=0.0)
    with pytest.raises(ValueError, match="ratio_kind"):
        IntSchedule(total_steps=10, ratio_kind="exp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval_kind"):
        IntSchedule(total_steps=10, interval_kind="exp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total_steps"):
        IntSchedule(total_steps=0)
    with pytest.raises(ValueError, match="max_interval"):
        IntSchedule(total_steps=10, max_interval=0)
