"""Speed of the layer-factored empirical NTK against per-sample-Jacobian baselines.

Cases (n representatives, float32, CPU):

- ``mlp``: ReLU+PE coordinate MLP with 8 hidden layers of 256 (3D input, 10 PE frequencies, 3 outputs).
- ``nerf_field``: nerfstudio's ``NeRFField`` at vanilla-NeRF size (NeRFEncoding 10/4 frequencies, base
  8x256 with a skip at 4, head 2x128; outputs density + rgb, C = 4) on n hand-built ray samples.

Methods: ``layer-factored`` (:func:`empirical_ntk`), ``jacrev`` (``torch.func.vmap(jacrev)`` per-sample
Jacobians, MLP only) and ``batched-vjp`` (``autograd.grad(is_grads_batched=True)``, generic). The baselines
materialise J (n x n_params, ~2 GB at n = 1024) and process samples in chunks of ``--chunk`` to bound
the vmap intermediates. Each timing is the minimum over ``--repeats`` runs (baselines: ``--baseline-repeats``,
they are slow). ``--threads`` (default 1) fixes torch's intra-op threads for both sides: the machine is shared,
and a single thread gives the most repeatable numbers there.

Usage (from the repository root):
    .venv/bin/python -m benchmarks.entk_speed            # n = 1024
    .venv/bin/python -m benchmarks.entk_speed --quick    # n = 256, smoke test
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro
from torch import Tensor, nn

from nerf_inr_methods.core.entk import empirical_ntk, empirical_ntk_jacrev, empirical_ntk_reference
from nerf_inr_methods.core.mlp import make_mlp
from nerf_inr_methods.reporting import write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_RESULTS_DIR = Path(__file__).resolve().parents[1] / "outputs" / "benchmarks_quick"


def timed(fn: Callable[[], Tensor], repeats: int) -> tuple[float, Tensor]:
    """Minimum wall-clock seconds over ``repeats`` calls (least perturbed by other jobs), and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def rel_err(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def result_row(
    case: str,
    module: nn.Module,
    layer_factored: tuple[float, Tensor],
    batched_vjp: tuple[float, Tensor],
    jacrev: tuple[float, Tensor] | None = None,
) -> dict:
    """One case's timings (s) and the relative differences of the layer-factored eNTK to each baseline's."""
    (t_fast, k_fast), (t_vjp, k_vjp) = layer_factored, batched_vjp
    return dict(
        case=case,
        n=k_fast.shape[0],
        n_params=sum(p.numel() for p in module.parameters()),
        t_layer_factored=t_fast,
        t_jacrev=None if jacrev is None else jacrev[0],
        t_batched_vjp=t_vjp,
        rel_err_vs_jacrev=None if jacrev is None else rel_err(k_fast, jacrev[1]),
        rel_err_vs_batched_vjp=rel_err(k_fast, k_vjp),
    )


def mlp_case(n: int, seed: int) -> tuple[nn.Module, Callable[[], Tensor], Tensor]:
    torch.manual_seed(seed)
    net = make_mlp(3, 3, width=256, depth=8, activation="relu", pe_frequencies=10)
    x = torch.rand(n, 3) * 2 - 1
    return net, lambda: net(x), x


def nerf_field_case(n: int, seed: int) -> tuple[nn.Module, Callable[[], Tensor]]:
    from nerfstudio.cameras.rays import Frustums, RaySamples
    from nerfstudio.field_components.encodings import NeRFEncoding
    from nerfstudio.field_components.field_heads import FieldHeadNames
    from nerfstudio.fields.vanilla_nerf_field import NeRFField

    torch.manual_seed(seed)
    field = NeRFField(
        position_encoding=NeRFEncoding(3, 10, 0.0, 8.0, include_input=True),
        direction_encoding=NeRFEncoding(3, 4, 0.0, 4.0, include_input=True),
    )
    frustums = Frustums(
        origins=torch.randn(n, 3),
        directions=nn.functional.normalize(torch.randn(n, 3), dim=-1),
        starts=torch.rand(n, 1) * 4 + 2,
        ends=torch.rand(n, 1) * 0.01 + 6,
        pixel_area=torch.ones(n, 1),
    )
    samples = RaySamples(frustums=frustums)

    def forward() -> Tensor:
        out = field(samples)
        return torch.cat([out[FieldHeadNames.DENSITY], out[FieldHeadNames.RGB]], dim=-1)

    return field, forward


@dataclass
class EntkSpeedConfig:
    """Speed of the layer-factored empirical NTK against per-sample-Jacobian baselines."""

    quick: bool = False
    """n = 256 smoke run (about a minute)."""
    n: int | None = None
    """Number of representatives (default 1024, quick 256)."""
    chunk: int = 128
    """Samples per vmapped call in the baselines."""
    repeats: int = 5
    """Timed runs of the layer-factored eNTK."""
    baseline_repeats: int | None = None
    """Timed runs of each baseline (2; quick 1)."""
    threads: int = 1
    """torch intra-op threads for all methods."""
    seed: int = 0
    """Seed of the networks and inputs."""
    out: Path | None = None
    """JSON output (default benchmarks/results/entk_speed.json; with --quick outputs/benchmarks_quick/)."""


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default: the command line), time both cases, print the table and write the JSON."""
    args = tyro.cli(EntkSpeedConfig, args=argv, description=__doc__.splitlines()[0])
    n = args.n if args.n is not None else (256 if args.quick else 1024)
    if n < 2:
        raise ValueError(f"--n must be >= 2, got {n}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    base_reps = args.baseline_repeats if args.baseline_repeats is not None else (1 if args.quick else 2)

    rows: list[dict] = []

    # The fast method of both cases is timed before any baseline (the baselines' GB-sized allocations
    # perturb later timings on a shared machine).
    net, forward, x = mlp_case(n, args.seed)
    field, field_forward = nerf_field_case(n, args.seed)
    forward(), field_forward()  # warm-up
    t_fast, k_fast = timed(lambda: empirical_ntk(net, forward), args.repeats)
    t_fast_field, k_fast_field = timed(lambda: empirical_ntk(field, field_forward), args.repeats)

    jacrev = timed(lambda: empirical_ntk_jacrev(net, x, chunk_size=args.chunk), base_reps)
    batched_vjp = timed(lambda: empirical_ntk_reference(net, forward, chunk_size=args.chunk), base_reps)
    rows.append(result_row("mlp 8x256 relu+pe", net, (t_fast, k_fast), batched_vjp, jacrev))
    del jacrev, batched_vjp

    batched_vjp = timed(lambda: empirical_ntk_reference(field, field_forward, chunk_size=args.chunk), base_reps)
    rows.append(result_row("nerfstudio NeRFField (vanilla size)", field, (t_fast_field, k_fast_field), batched_vjp))

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    print(f"\n## eNTK speed (n = {n}, float32, CPU, {torch.get_num_threads()} threads, machine shared)\n")
    print("| case | params | layer-factored (s) | jacrev (s) | batched VJP (s) | speed-up | rel. err |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        base = min(t for t in (r["t_jacrev"], r["t_batched_vjp"]) if t is not None)
        r["speedup_vs_best_baseline"] = base / r["t_layer_factored"]
        err = max(e for e in (r["rel_err_vs_jacrev"], r["rel_err_vs_batched_vjp"]) if e is not None)
        r["max_rel_err"] = err
        print(
            f"| {r['case']} | {r['n_params']:,} | {r['t_layer_factored']:.3f} | {fmt(r['t_jacrev'], '.2f')} | "
            f"{fmt(r['t_batched_vjp'], '.2f')} | {r['speedup_vs_best_baseline']:.0f}x | {err:.1e} |"
        )
    worst = min(r["speedup_vs_best_baseline"] for r in rows)
    max_err = max(r["max_rel_err"] for r in rows)
    ok = worst >= 10 and max_err < 1e-4
    print(
        f"\nSummary: layer-factored eNTK is >= {worst:.0f}x faster than the best per-sample-Jacobian baseline "
        f"at n = {n} (target >= 10x: {'met' if ok else 'NOT met'}), max relative difference {max_err:.1e}."
    )
    meta = dict(
        n=n,
        chunk=args.chunk,
        repeats=args.repeats,
        baseline_repeats=base_reps,
        statistic="min over repeats",
        seed=args.seed,
        quick=args.quick,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        machine=platform.machine(),
        load_average=os.getloadavg(),
        note="CPU shared with other jobs (load average above); timings are noisy",
    )
    out = write_json(
        dict(meta=meta, rows=rows),
        args.out or (QUICK_RESULTS_DIR / "entk_speed_quick.json" if args.quick else RESULTS_DIR / "entk_speed.json"),
    )
    print(f"(raw numbers: {out})")


if __name__ == "__main__":
    main()
