"""The composed method (inr-nerf with INT + IGA + Gaussian field + ESGD switches) and the IGA/ESGD trap.

The trap (issue 8): ESGD's Hessian-vector product must be taken on the true MSE, not through IGA's stop-gradient
surrogate, whose Hessian drops the ``J^T S J`` term. With S = I the surrogate's *gradient* equals the MSE's, so the
composed path is right exactly when its curvature (hence every ESGD update) equals plain ESGD's on the MSE.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from nerf_helpers import GAUSSIAN_SINGLE_FIELD, rays_toward_origin, small_model

N_RAYS = 16


def make_model(**config: Any):
    """A small InrNeRFModel in training mode; Gaussian single field unless overridden."""
    return small_model(**{**GAUSSIAN_SINGLE_FIELD, "num_coarse_samples": 12, "base_mlp_layer_width": 16,
                          "head_mlp_layer_width": 8, **config})  # fmt: skip


def make_batch(n: int = N_RAYS, seed: int = 3):
    """n rays from around (0, 0, 4) towards the origin and RGB targets."""
    bundle, g = rays_toward_origin(n, seed)
    return bundle, {"image": torch.rand(n, 3, generator=g)}


def losses(model, bundle, batch, seed: int = 7):
    """(training loss = sum of the loss dict, outputs, metrics) of one forward with a fixed sampling seed."""
    torch.manual_seed(seed)
    outputs = model(bundle)
    metrics = model.get_metrics_dict(outputs, batch)
    loss_dict = model.get_loss_dict(outputs, batch, metrics)
    return sum(loss_dict.values()), outputs, metrics


def hvp(loss: torch.Tensor, params: List[torch.Tensor], vectors: List[torch.Tensor]) -> List[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, create_graph=True, retain_graph=True)
    return list(torch.autograd.grad(grads, params, grad_outputs=vectors, retain_graph=True))


@pytest.mark.parametrize("field_type", ["gaussian", "relu-pe"])
def test_hvp_on_the_surrogate_path_equals_the_mse_hvp_with_identity(field_type: str) -> None:
    """S = I: the curvature the trainer takes on the IGA path equals the plain MSE's HVP (to 1e-6 relative), and
    the HVP of the surrogate itself does not (the trap)."""
    hierarchical = field_type == "relu-pe"
    model = make_model(field_type=field_type, hierarchical_sampling=hierarchical)
    params = [p for p in model.get_param_groups()["fields"] if p.requires_grad]
    g = torch.Generator().manual_seed(11)
    vectors = [torch.randint(0, 2, p.shape, generator=g).float() * 2 - 1 for p in params]
    bundle, batch = make_batch()

    mse_loss, outputs_mse, _ = losses(model, bundle, batch)
    assert model.curvature_loss(outputs_mse, batch) is None  # IGA off: ESGD differentiates the training loss itself
    expected = hvp(mse_loss, params, vectors)

    model.config.iga, model.config.iga_identity, model._iga = True, True, None
    surrogate, outputs, metrics = losses(model, bundle, batch)
    objective = model.curvature_loss(outputs, batch)
    assert objective is not None and float(metrics["iga_applied"]) == 1.0
    got = hvp(objective, params, vectors)
    scale = max(float(e.abs().max()) for e in expected)
    assert scale > 1e-6
    assert max(float((a - b).abs().max()) for a, b in zip(got, expected, strict=True)) <= 1e-6 * scale
    # same gradient (S = I) ...
    for a, b in zip(
        torch.autograd.grad(surrogate, params, retain_graph=True),
        torch.autograd.grad(mse_loss, params, retain_graph=True),
        strict=True,
    ):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    # ... but the surrogate's own Hessian lacks J^T J: the wrong curvature
    wrong = hvp(surrogate, params, vectors)
    assert max(float((a - b).abs().max()) for a, b in zip(wrong, expected, strict=True)) > 1e-3 * scale


def test_esgd_steps_of_the_composed_path_equal_plain_esgd_with_identity() -> None:
    """A few ESGD steps, trainer-style: IGA(S = I) with curvature on the true loss == ESGD on the MSE (float32
    noise only), while taking the curvature on the surrogate moves the parameters elsewhere."""
    from nerf_inr_methods.core.esgd import ESGD

    bundle, batch = make_batch()
    final: Dict[str, List[torch.Tensor]] = {}
    for mode in ("mse", "composed", "curvature-on-surrogate"):
        iga = mode != "mse"
        model = make_model(iga=iga, iga_identity=iga)
        params = model.get_param_groups()["fields"]
        initial = [p.detach().clone() for p in params]
        opt = ESGD(params, lr=0.05, d_warmup=2, update_d_every=2, generator=torch.Generator().manual_seed(0))
        for step in range(4):
            opt.zero_grad()
            loss, outputs, _ = losses(model, bundle, batch, seed=step)
            objective = model.curvature_loss(outputs, batch)
            if objective is not None and mode == "composed":
                opt.accumulate_curvature(objective)
            loss.backward(create_graph=opt.should_create_graph())
            opt.step()
        assert opt.num_curvature_steps == 3
        final[mode] = [p.detach().clone() for p in params]
    update = max(float((a - b).abs().max()) for a, b in zip(final["mse"], initial, strict=True))

    def distance(mode: str) -> float:
        return max(float((a - b).abs().max()) for a, b in zip(final[mode], final["mse"], strict=True))

    assert distance("composed") <= 1e-4 * update
    assert distance("curvature-on-surrogate") > 100 * max(distance("composed"), 1e-7)


def test_full_combination_is_built_from_the_single_methods_pieces() -> None:
    """inr-nerf with every switch on uses the same classes as int-nerf, iga-nerf and gauss-nerf."""
    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDOptimizerConfig
    from nerf_inr_methods.nerfstudio_plugin.method_configs import gauss_nerf, iga_nerf, inr_nerf, int_nerf

    config = inr_nerf.config
    for single in (int_nerf.config, iga_nerf.config, gauss_nerf.config):
        assert type(single) is type(config)
        assert type(single.pipeline) is type(config.pipeline)
        assert type(single.pipeline.model) is type(config.pipeline.model)
    model = config.pipeline.model
    assert (config.pipeline.int_enabled, model.iga, model.field_type, config.optimizer) == (
        False,
        False,
        "relu-pe",
        "configured",
    )
    selected = config.selected_optimizers(["fields"])["fields"]
    assert not isinstance(selected["optimizer"], ESGDOptimizerConfig)


@pytest.mark.slow
def test_full_combination_trains_and_evaluates(tiny_scene: Path, tmp_path: Path) -> None:
    """INT + IGA + Gaussian field + ESGD in one run: every switch acts (logged metrics), the true loss falls,
    checkpoint, ns-eval."""
    from nerf_inr_methods.nerfstudio_plugin.runs import evaluate, prepare_config, train

    overrides = {
        "optimizer": "esgd",
        "pipeline.int_enabled": True,
        "pipeline.int_total_steps": 12,
        "pipeline.model.iga": True,
        "pipeline.model.iga_end": 3,
        "pipeline.model.field_type": "gaussian",
        "pipeline.model.hierarchical_sampling": False,
        "pipeline.datamanager.train_num_rays_per_batch": 64,
        "pipeline.model.num_coarse_samples": 16,
        "pipeline.model.base_mlp_num_layers": 4,
        "pipeline.model.base_mlp_layer_width": 32,
        "pipeline.model.head_mlp_num_layers": 1,
        "pipeline.model.head_mlp_layer_width": 16,
    }
    config = prepare_config("inr-nerf", tiny_scene, tmp_path, steps=12, timestamp="all", overrides=overrides)
    config.optimizer_presets["esgd"]["optimizer"].d_warmup = 2
    config.optimizer_presets["esgd"]["optimizer"].update_d_every = 3
    seen: List[Dict[str, Any]] = []
    from nerf_inr_methods.nerfstudio_plugin import int_pipeline

    original = int_pipeline.InrPipeline.get_train_losses

    def spy(self, step: int):
        result = original(self, step)
        seen.append(
            {
                k: float(v)
                for k, v in result.metrics_dict.items()
                if k in ("iga_applied", "int_ratio", "rays_trained", "true_loss")
            }
        )
        seen[-1]["curvature_loss"] = result.curvature_loss is not None and result.curvature_loss.requires_grad
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(int_pipeline.InrPipeline, "get_train_losses", spy)  # what ESGDTrainer asks the pipeline for
        config_path = train(config)
    assert len(seen) == 12 and all(s["iga_applied"] == 1.0 and s["curvature_loss"] for s in seen)
    assert all(s["rays_trained"] < 64 for s in seen) and seen[0]["int_ratio"] == pytest.approx(0.2)
    checkpoint = torch.load(next((config_path.parent / "nerfstudio_models").glob("*.ckpt")), map_location="cpu")
    assert checkpoint["optimizers"]["fields"]["esgd"]["num_curvature_steps"] == 5  # steps 0, 1, then 4, 7, 10
    true_loss = [s["true_loss"] for s in seen]  # the MSE the surrogate stands for (measured here: 0.247 -> 0.18)
    assert true_loss[-1] < 0.9 * true_loss[0] and sum(true_loss[-3:]) < sum(true_loss[:3])
    metrics = evaluate(config_path)
    assert set(metrics) >= {"psnr", "fine_ssim"} and math.isfinite(metrics["psnr"])
