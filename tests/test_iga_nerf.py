"""iga-nerf: IGA on the fine field of InrNeRFModel (S = I control, adjusted gradient, true metrics, flags, smoke)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch
from nerf_helpers import SMALL_PIPELINE, rays_toward_origin, small_model

BIN = Path(sys.executable).parent
N_RAYS = 24


def make_model(**config: Any):
    """A small InrNeRFModel (nerfstudio's NeRFField, 4x32 base MLP, 8 + 8 samples) in training mode."""
    return small_model(**config)


def make_batch(n: int = N_RAYS, seed: int = 1) -> Tuple[Any, Dict[str, torch.Tensor]]:
    """n rays from around (0, 0, 4) towards the origin, and RGBA targets (some transparent pixels)."""
    bundle, g = rays_toward_origin(n, seed)
    image = torch.rand(n, 4, generator=g)
    image[: n // 3, 3] = 0.0  # background pixels: blending matters
    return bundle, {"image": image}


def set_flags(model, **flags: Any) -> None:
    for name, value in flags.items():
        setattr(model.config, name, value)
    model._iga = None  # fresh IGA state for the new flags


def step_grads(model, bundle, batch, *, vanilla: bool = False, seed: int = 5):
    """One training step's (loss_dict, metrics_dict, grads of coarse and fine field parameters); fixed sampling seed.

    ``vanilla=True`` takes the loss from nerfstudio's own ``NeRFModel.get_loss_dict``."""
    from nerfstudio.models.vanilla_nerf import NeRFModel

    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    outputs = model(bundle)
    if vanilla:  # exactly nerfstudio's calls (its metrics dict is empty: no extra random background draws)
        metrics = NeRFModel.get_metrics_dict(model, outputs, batch)
        loss_dict = NeRFModel.get_loss_dict(model, outputs, batch, metrics)
    else:
        metrics = model.get_metrics_dict(outputs, batch)
        loss_dict = model.get_loss_dict(outputs, batch, metrics)
    sum(loss_dict.values()).backward()

    def grads(module) -> List[torch.Tensor]:
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]

    fields = {"coarse": model.field_coarse, "fine": model.field_fine}
    return loss_dict, metrics, {k: grads(f) for k, f in fields.items() if f is not None}, outputs


def max_diff(a: List[torch.Tensor], b: List[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("background", ["white", "random"])
def test_identity_control_gradients_equal_vanilla(background: str) -> None:
    """S = I through the surrogate path gives nerfstudio vanilla NeRF's gradients (to 1e-6; here bitwise)."""
    model = make_model(background_color=background)
    bundle, batch = make_batch()
    loss_v, _, grads_v, _ = step_grads(model, bundle, batch, vanilla=True)
    set_flags(model, iga=True, iga_identity=True)
    loss_i, metrics_i, grads_i, _ = step_grads(model, bundle, batch)
    for name in ("coarse", "fine"):
        assert max_diff(grads_v[name], grads_i[name]) <= 1e-6, name
    assert max(float(g.abs().max()) for g in grads_v["fine"]) > 1e-4  # the comparison is not vacuous
    assert float(metrics_i["iga_applied"]) == 1.0 and float(metrics_i["iga_end"]) == 0.0
    # the true MSE is logged (the surrogate's value is not an MSE)
    assert float(metrics_i["rgb_mse_fine"]) == pytest.approx(float(loss_v["rgb_loss_fine"].detach()), rel=1e-6)
    set_flags(model, iga=False, iga_identity=False)
    _, _, grads_off, _ = step_grads(model, bundle, batch)
    assert max_diff(grads_v["fine"], grads_off["fine"]) == 0.0  # our get_loss_dict with IGA off is vanilla's


def test_iga_composes_with_the_single_gaussian_field() -> None:
    """IGA on the GARF-style single field (no coarse field): S = I reproduces vanilla, IGA adjusts and runs."""
    model = make_model(field_type="gaussian", hierarchical_sampling=False, base_mlp_num_layers=3)
    bundle, batch = make_batch()
    _, _, grads_v, _ = step_grads(model, bundle, batch, vanilla=True)
    set_flags(model, iga=True, iga_identity=True)
    _, _, grads_i, _ = step_grads(model, bundle, batch)
    assert max_diff(grads_v["fine"], grads_i["fine"]) <= 1e-6
    set_flags(model, iga=True, iga_identity=False, iga_end=4)
    _, metrics, grads_a, _ = step_grads(model, bundle, batch)
    assert float(metrics["iga_end"]) == 4 and max_diff(grads_v["fine"], grads_a["fine"]) > 1e-7


def test_iga_gradient_is_j_t_s_r_on_the_fine_field_only() -> None:
    """The fine field's gradient equals (2/N) J^T (S R), S built from a materialised-Jacobian eNTK of the fine field
    on each ray's max-weight sample; the coarse field keeps vanilla's gradient exactly."""
    from nerf_inr_methods.core.entk import empirical_ntk_reference
    from nerf_inr_methods.core.iga import balance_spectrum, max_weight_representatives
    from nerf_inr_methods.nerfstudio_plugin.iga_nerf import field_outputs_matrix, fine_field_entk

    end = 5
    model = make_model()
    bundle, batch = make_batch()
    _, _, grads_v, _ = step_grads(model, bundle, batch, vanilla=True)
    set_flags(model, iga=True, iga_end=end)
    loss, metrics, grads_a, _ = step_grads(model, bundle, batch)
    assert max_diff(grads_v["coarse"], grads_a["coarse"]) == 0.0
    assert max_diff(grads_v["fine"], grads_a["fine"]) > 1e-6
    assert float(metrics["iga_end"]) == end and float(metrics["iga_applied"]) == 1.0

    # independent reconstruction on the same forward (same sampling seed): representatives, reference eNTK
    # (materialised per-sample Jacobians), S, J^T (S R)
    torch.manual_seed(5)
    outputs = model(bundle)
    index = max_weight_representatives(outputs["weights_fine"])
    reps = outputs["ray_samples_fine"][torch.arange(N_RAYS), index]
    field = model.field_fine
    kernel_ref = empirical_ntk_reference(field, lambda: field_outputs_matrix(field, reps))
    kernel = fine_field_entk(field, reps)
    assert kernel.shape == (N_RAYS, N_RAYS)
    assert float((kernel - kernel_ref).norm() / kernel_ref.norm()) < 1e-5
    s_matrix = balance_spectrum(kernel_ref.double(), end).float()
    fine_pred = outputs["rgb_fine"]  # the renderer already composites the white background
    image = batch["image"]
    fine_gt = image[:, :3] * image[:, 3:] + (1.0 - image[:, 3:])
    residual = (fine_pred - fine_gt).detach()
    expected = torch.autograd.grad(
        fine_pred, list(field.parameters()), grad_outputs=(2.0 / residual.numel()) * (s_matrix @ residual)
    )
    for got, want in zip(grads_a["fine"], expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-6)


def test_true_metrics_and_true_loss_for_other_trainers() -> None:
    """With IGA on, metrics keep the true MSEs/PSNR/loss, and the model names the graph-carrying true loss as its
    curvature loss (for ESGD's HVP); the outputs carry no loss."""
    from nerf_inr_methods.nerfstudio_plugin.inr_nerf import TRUE_FINE_MSE_KEY, TRUE_LOSS_KEY

    model = make_model(loss_coefficients={"rgb_loss_coarse": 0.5, "rgb_loss_fine": 2.0})
    bundle, batch = make_batch()
    loss_v, _, _, _ = step_grads(model, bundle, batch, vanilla=True)
    set_flags(model, iga=True, iga_end=4)
    loss_a, metrics, _, outputs = step_grads(model, bundle, batch)
    true_total = sum(float(v.detach()) for v in loss_v.values())
    assert float(metrics[TRUE_LOSS_KEY]) == pytest.approx(true_total, rel=1e-6)
    assert all(not v.requires_grad for v in metrics.values())  # logged values carry no graph
    assert TRUE_LOSS_KEY not in outputs  # no side channel
    graph_loss = model.curvature_loss(outputs, batch)  # the graph-carrying true loss trainers can differentiate (ESGD)
    assert graph_loss.grad_fn is not None and float(graph_loss.detach()) == pytest.approx(true_total, rel=1e-6)
    assert float(metrics[TRUE_FINE_MSE_KEY]) * 2.0 == pytest.approx(float(loss_v["rgb_loss_fine"].detach()), rel=1e-6)
    assert float(metrics["psnr"]) == pytest.approx(-10 * math.log10(float(metrics[TRUE_FINE_MSE_KEY])), rel=1e-5)
    coarse_a, coarse_v = float(loss_a["rgb_loss_coarse"].detach()), float(loss_v["rgb_loss_coarse"].detach())
    assert coarse_a == pytest.approx(coarse_v, rel=1e-6)
    fine_a, fine_v = float(loss_a["rgb_loss_fine"].detach()), float(loss_v["rgb_loss_fine"].detach())
    assert abs(fine_a - fine_v) > 1e-6  # the surrogate's value is not the MSE


def test_flag_combinations() -> None:
    model = make_model()
    bundle, batch = make_batch()
    # IGA off: plain losses, no IGA state or metrics
    _, metrics, _, _ = step_grads(model, bundle, batch)
    assert "iga_applied" not in metrics and getattr(model, "_iga", None) is None
    # the control needs the method
    set_flags(model, iga=False, iga_identity=True)
    with pytest.raises(ValueError, match="iga-identity"):
        step_grads(model, bundle, batch)
    for bad in ({"iga_end": 0}, {"iga_update_every": 0}, {"iga_end": 2.5}):
        set_flags(model, iga=True, iga_identity=False, iga_end=4, iga_update_every=1)
        set_flags(model, **bad)
        with pytest.raises(ValueError, match="iga-"):
            step_grads(model, bundle, batch)
    # every 2nd step adjusted; the others train on the plain MSE
    set_flags(model, iga=True, iga_identity=False, iga_end=4, iga_update_every=2)
    applied = []
    for _ in range(3):
        loss, metrics, _, _ = step_grads(model, bundle, batch)
        applied.append(float(metrics["iga_applied"]))
        if not metrics["iga_applied"]:
            assert float(loss["rgb_loss_fine"].detach()) == pytest.approx(float(metrics["rgb_mse_fine"]), rel=1e-6)
    assert applied == [1.0, 0.0, 1.0]
    # end larger than the batch is clamped to n - 1
    set_flags(model, iga_update_every=1, iga_end=10 * N_RAYS)
    _, metrics, _, _ = step_grads(model, bundle, batch)
    assert float(metrics["iga_end"]) <= N_RAYS - 1
    # evaluation mode: plain MSE, no adjustment
    model.eval()
    with torch.no_grad():
        outputs = model(bundle)
        metrics = model.get_metrics_dict(outputs, batch)
        loss = model.get_loss_dict(outputs, batch, metrics)
    assert "iga_applied" not in metrics
    assert float(loss["rgb_loss_fine"].detach()) == pytest.approx(float(metrics["rgb_mse_fine"]), rel=1e-6)


def test_iga_nerf_is_registered_with_defaults() -> None:
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    assert "iga-nerf" in methods and "IGA" in descriptions["iga-nerf"]
    model = methods["iga-nerf"].pipeline.model
    assert (model.iga, model.iga_end, model.iga_update_every, model.iga_identity) == (True, 25, 1, False)
    assert methods["inr-nerf"].pipeline.model.iga is False


SMOKE = {
    **SMALL_PIPELINE,
    "pipeline.model.iga_end": 4,
    "pipeline.model.iga_update_every": 2,
}


@pytest.mark.slow
def test_iga_nerf_trains_and_evaluates_in_process(tiny_scene: Path, tmp_path: Path) -> None:
    """CPU smoke: 40 iga-nerf steps through nerfstudio's trainer (every 2nd adjusted) lower the true loss; then
    ns-eval's metrics from the checkpoint."""
    from nerf_inr_methods.nerfstudio_plugin import int_pipeline
    from nerf_inr_methods.nerfstudio_plugin.runs import evaluate, prepare_config, train

    config = prepare_config("iga-nerf", tiny_scene, tmp_path, steps=40, overrides=SMOKE)
    config.optimizers["fields"]["optimizer"].lr = 5e-3
    seen: List[Dict[str, float]] = []
    original = int_pipeline.InrPipeline.train_step

    def spy(self, step: int):
        result = original(self, step)
        seen.append({k: float(result[3][k]) for k in ("true_loss", "iga_applied")})
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(int_pipeline.InrPipeline, "train_step", spy)
        config_path = train(config)
    assert [s["iga_applied"] for s in seen] == [1.0, 0.0] * 20
    true_loss = [s["true_loss"] for s in seen]  # measured here: 0.38 over the first 5 steps, 0.29 over the last 5
    assert sum(true_loss[-5:]) < 0.9 * sum(true_loss[:5])
    metrics = evaluate(config_path)
    assert set(metrics) >= {"psnr", "fine_psnr", "fine_ssim"} and math.isfinite(metrics["psnr"])


@pytest.mark.slow
def test_ns_train_iga_nerf_help_lists_the_flags() -> None:
    result = subprocess.run(
        [str(BIN / "ns-train"), "iga-nerf", "--help"], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for flag in ("--pipeline.model.iga", "--pipeline.model.iga-end", "--pipeline.model.iga-update-every"):
        assert flag in result.stdout
    assert "--pipeline.model.iga-identity" in result.stdout


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One process of a CPU (gloo) DDP step wrapped as nerfstudio's multi-GPU mode wraps the model."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = make_model(iga=True, iga_end=4)
        ddp = DistributedDataParallel(model, find_unused_parameters=True)  # as VanillaPipeline does
        bundle, batch = make_batch(seed=10 + rank)  # each process has its own rays
        torch.manual_seed(5 + rank)
        outputs = ddp(bundle)
        metrics = model.get_metrics_dict(outputs, batch)
        sum(model.get_loss_dict(outputs, batch, metrics).values()).backward()
        grads = [p.grad.clone() for p in model.get_param_groups()["fields"]]
        torch.save({"grads": grads, "iga_applied": float(metrics["iga_applied"])}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_multi_process_ddp_each_process_adjusts_its_own_rays(tmp_path: Path) -> None:
    """Under DDP each process builds S on its own rays; the synchronised gradient is the mean of the per-process
    IGA gradients (so multi-GPU iga-nerf = single-process IGA per ray batch, averaged as vanilla's MSE is)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert all(r["iga_applied"] == 1.0 for r in results)
    local = []
    for rank in range(2):  # the same step in this process, without DDP
        model = make_model(iga=True, iga_end=4)
        bundle, batch = make_batch(seed=10 + rank)
        torch.manual_seed(5 + rank)
        outputs = model(bundle)
        metrics = model.get_metrics_dict(outputs, batch)
        sum(model.get_loss_dict(outputs, batch, metrics).values()).backward()
        local.append([p.grad.clone() for p in model.get_param_groups()["fields"]])
    mean = [(a + b) / 2 for a, b in zip(*local, strict=True)]
    for r in results:
        assert max_diff(r["grads"], mean) <= 1e-6
    assert max_diff(local[0], local[1]) > 1e-5  # the two processes' rays really differ


@pytest.mark.slow
@pytest.mark.shared_data
def test_iga_nerf_benchmark_quick(shared_data: Path, tmp_path: Path) -> None:
    """benchmarks/iga_nerf.py --quick on the real mic scene: every arm, the probe, the S = I control, the JSON (in a
    temporary folder: the tracked results stay as they are)."""
    import json

    from benchmarks import iga_nerf as bench

    payload = bench.main(["--quick", "--results-dir", str(tmp_path)])
    assert payload["summary_line"].startswith("SUMMARY iga_nerf")
    assert {arm: len(r) for arm, r in payload["runs"].items()} == {"vanilla": 1, "iga": 1, "identity": 1}
    for runs in payload["runs"].values():
        assert math.isfinite(runs[0]["psnr"][-1]) and len(runs[0]["probe_fraction_left"]) == len(runs[0]["step"])
    assert payload["paired_identity_minus_vanilla_db"]["diffs"] == [0.0]  # same gradients -> same run
    saved = json.loads((tmp_path / "iga_nerf_quick.json").read_text())
    assert saved["summary_line"] == payload["summary_line"]
