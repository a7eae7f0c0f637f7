"""gauss-nerf: the Gaussian field, InrNeRFModel's single-field mode, the method's defaults, and a smoke run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import torch
from nerf_helpers import GAUSSIAN_SINGLE_FIELD, rays_toward_origin, small_model
from torch import nn

N_RAYS = 12


def ray_bundle(n: int = N_RAYS, seed: int = 1):
    """n rays from around (0, 0, 4) towards the origin, sampled between 2 and 6."""
    bundle, _ = rays_toward_origin(n, seed, nears=torch.full((n, 1), 2.0), fars=torch.full((n, 1), 6.0))
    return bundle


def ray_samples(n_rays: int = N_RAYS, n_samples: int = 5):
    from nerfstudio.model_components.ray_samplers import UniformSampler

    return UniformSampler(num_samples=n_samples)(ray_bundle(n_rays))


def small_field(**options: Any):
    from nerf_inr_methods.nerfstudio_plugin.gaussian_field import GaussianNeRFField

    torch.manual_seed(0)
    kwargs: Dict[str, Any] = dict(
        base_mlp_num_layers=6, base_mlp_layer_width=16, head_mlp_num_layers=1, head_mlp_layer_width=8, sigma=0.1
    )
    kwargs.update(options)
    return GaussianNeRFField(**kwargs)


def make_model(**config: Any):
    """A small InrNeRFModel in training mode (Gaussian single field unless overridden)."""
    return small_model(**{**GAUSSIAN_SINGLE_FIELD, "num_coarse_samples": 16, "base_mlp_num_layers": 6,
                          "base_mlp_layer_width": 16, "head_mlp_layer_width": 8, **config})  # fmt: skip


def batch_for(n: int = N_RAYS, seed: int = 2) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 3, generator=g)}


# ----------------------------------------------------------------------------------------------- the field
def test_field_outputs_shapes_ranges_and_float32() -> None:
    from nerfstudio.field_components.field_heads import FieldHeadNames

    field = small_field()
    samples = ray_samples(N_RAYS, 5)
    out = field(samples)
    density, rgb = out[FieldHeadNames.DENSITY], out[FieldHeadNames.RGB]
    assert density.shape == (N_RAYS, 5, 1) and rgb.shape == (N_RAYS, 5, 3)
    assert density.dtype == rgb.dtype == torch.float32
    assert bool((density >= 0).all()) and bool(((rgb > 0) & (rgb < 1)).all())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the field stays fp32 under mixed precision
        auto = field(samples)
    assert auto[FieldHeadNames.RGB].dtype == torch.float32
    assert torch.allclose(auto[FieldHeadNames.DENSITY], density) and torch.allclose(auto[FieldHeadNames.RGB], rgb)


def test_field_layout_is_garf() -> None:
    """8 Gaussian layers of 256 on raw xyz (skip at hidden layer 4), one Gaussian layer of 128 on [feature, dir]."""
    from nerf_inr_methods.core.mlp import GaussianActivation
    from nerf_inr_methods.nerfstudio_plugin.gaussian_field import GaussianNeRFField

    field = GaussianNeRFField()
    pos = field.position_mlp
    assert [(lin.in_features, lin.out_features) for lin in pos.linear_layers()] == [
        (3, 256),
        *[(256, 256)] * 3,
        (259, 256),
        *[(256, 256)] * 2,
        (256, 257),  # density + feature, the feature Gaussian-activated: 8 Gaussian layers in all
    ]
    assert pos.pe_frequencies == 0 and pos.skip_layers == (4,)
    head = field.head_mlp.linear_layers()
    assert [(lin.in_features, lin.out_features) for lin in head] == [(259, 128), (128, 3)]
    acts = [m for m in field.modules() if isinstance(m, GaussianActivation)]
    assert acts and all(a.sigma == 0.1 for a in acts)
    linear_params = {id(p) for lin in field.linear_layers() for p in lin.parameters()}
    assert linear_params == {id(p) for p in field.parameters()}  # every parameter sits in an nn.Linear
    assert GaussianNeRFField(base_mlp_num_layers=4).position_mlp.skip_layers == ()  # no hidden layer 4: no skip


def test_field_layout_garf() -> None:
    """GARF's NeRF_Gaussian: centred Gaussian embeddings of xyz and directions, the embedding at the skip, linear
    density and feature layers, one Gaussian head layer of 128 on [feature, direction embedding]."""
    from nerf_inr_methods.core.mlp import CenteredGaussianActivation
    from nerf_inr_methods.nerfstudio_plugin.gaussian_field import GaussianNeRFField

    field = GaussianNeRFField(layout="garf")
    shapes = [(lin.in_features, lin.out_features) for lin in field.linear_layers()]
    assert shapes == [
        (3, 256),  # xyz embedding (Gaussian layer 1 of 8)
        *[(256, 256)] * 5,
        (512, 256),  # [h, embedding] after hidden layer 4
        (256, 256),  # Gaussian layer 8
        (256, 1),  # density (linear, softplus)
        (256, 256),  # feature (linear)
        (3, 256),  # direction embedding
        (512, 128),  # head Gaussian layer on [feature, direction embedding]
        (128, 3),
    ]
    assert (
        isinstance(field.embedding_activation, CenteredGaussianActivation) and field.embedding_activation.sigma == 0.1
    )
    linear_params = {id(p) for lin in field.linear_layers() for p in lin.parameters()}
    assert linear_params == {id(p) for p in field.parameters()}
    x = torch.rand(7, 3)
    pre = field.position_embedding(x)
    expected = torch.exp(-0.5 * ((pre - pre.mean(-1, keepdim=True)) / 0.1) ** 2)
    assert torch.allclose(field.embedding_activation(pre), expected)
    density, feature = field.density_and_feature(x)
    assert density.shape == (7, 1) and bool((density >= 0).all()) and feature.shape == (7, 256)
    with pytest.raises(ValueError, match="layout"):
        GaussianNeRFField(layout="siren")  # type: ignore[arg-type]


def test_field_rejects_bad_sizes() -> None:
    from nerf_inr_methods.nerfstudio_plugin.gaussian_field import GaussianNeRFField

    with pytest.raises(ValueError, match="base_mlp_num_layers"):
        GaussianNeRFField(base_mlp_num_layers=1)
    with pytest.raises(ValueError, match="sigma"):
        GaussianNeRFField(sigma=0.0)


@pytest.mark.parametrize("layout", ["nerf", "garf"])
def test_field_entk_layer_factored_matches_reference(layout: str) -> None:
    """Each nn.Linear is applied once per sample, so IGA's layer-factored eNTK is exact on the Gaussian field."""
    from nerf_inr_methods.core.entk import empirical_ntk_reference
    from nerf_inr_methods.nerfstudio_plugin.iga_nerf import field_outputs_matrix, fine_field_entk

    field = small_field(sigma=0.5, layout=layout).double()
    samples = ray_samples(6, 1)[:, 0]
    samples.frustums.origins = samples.frustums.origins.double()
    samples.frustums.directions = samples.frustums.directions.double()
    samples.frustums.starts, samples.frustums.ends = samples.frustums.starts.double(), samples.frustums.ends.double()
    calls: list = []
    hooks = [lin.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0])) for lin in field.linear_layers()]
    field_outputs_matrix(field, samples)
    for h in hooks:
        h.remove()
    assert calls == [6] * len(field.linear_layers())
    factored = fine_field_entk(field, samples)
    reference = empirical_ntk_reference(field, lambda: field_outputs_matrix(field, samples) / 2.0 * 2.0)
    assert factored.shape == (6, 6)
    assert torch.allclose(factored, reference, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------ single-field mode
def test_single_field_mode_has_one_field_and_trains_it_once() -> None:
    model = make_model()
    assert model.field_coarse is None and model.field_fine is not None
    groups = model.get_param_groups()
    assert [id(p) for p in groups["fields"]] == [id(p) for p in model.field_fine.parameters()]

    calls: list = []
    model.sampler_pdf.forward = lambda *a, **k: calls.append(1)  # type: ignore[method-assign]
    batch = batch_for()
    outputs = model(ray_bundle())
    assert not calls  # no PDF sampler
    assert outputs["ray_samples_fine"].shape == (N_RAYS, 16)  # num_coarse_samples stratified samples
    assert outputs["weights_fine"].shape == (N_RAYS, 16, 1)
    for key in ("rgb", "accumulation", "depth"):
        assert torch.equal(outputs[f"{key}_coarse"], outputs[f"{key}_fine"])
        assert not outputs[f"{key}_coarse"].requires_grad
    metrics = model.get_metrics_dict(outputs, batch)
    loss = sum(model.get_loss_dict(outputs, batch, metrics).values())
    grads = torch.autograd.grad(loss, groups["fields"], retain_graph=True)
    pred, target = model.renderer_rgb.blend_background_for_loss_computation(
        pred_image=outputs["rgb_fine"], pred_accumulation=outputs["accumulation_fine"], gt_image=batch["image"]
    )
    expected = torch.autograd.grad(torch.mean((pred - target) ** 2), groups["fields"])
    for g, e in zip(grads, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-8)  # the field's MSE once (the coarse copy has no gradient)


def test_single_field_eval_and_hierarchical_gaussian() -> None:
    model = make_model().eval()
    with torch.no_grad():
        outputs = model(ray_bundle(144))
    assert {"rgb_coarse", "rgb_fine", "depth_fine", "accumulation_fine"} <= set(outputs)
    assert "weights_fine" not in outputs
    image = torch.rand(12, 12, 3)
    metrics, images = model.get_image_metrics_and_images(
        {k: v.reshape(12, 12, -1) for k, v in outputs.items()}, {"image": image}
    )
    assert metrics["psnr"] == metrics["coarse_psnr"] and "img" in images
    # Gaussian fields with vanilla hierarchical sampling: two Gaussian fields, both trained.
    from nerf_inr_methods.nerfstudio_plugin.gaussian_field import GaussianNeRFField

    two = make_model(hierarchical_sampling=True)
    assert isinstance(two.field_coarse, GaussianNeRFField) and isinstance(two.field_fine, GaussianNeRFField)
    assert len(two.get_param_groups()["fields"]) == 2 * len(list(two.field_fine.parameters()))


def test_relu_pe_single_field_and_bad_flags() -> None:
    from nerfstudio.fields.vanilla_nerf_field import NeRFField

    model = make_model(field_type="relu-pe")
    assert model.field_coarse is None and isinstance(model.field_fine, NeRFField)
    assert model(ray_bundle())["rgb_fine"].shape == (N_RAYS, 3)
    with pytest.raises(ValueError, match="gaussian-sigma"):
        make_model(gaussian_sigma=-1.0)
    with pytest.raises(ValueError, match="field-type"):
        make_model(field_type="siren")


def test_iga_adjusts_the_single_gaussian_field() -> None:
    model = make_model(iga=True, iga_end=3)
    batch = batch_for()
    outputs = model(ray_bundle())
    metrics = model.get_metrics_dict(outputs, batch)
    loss_dict = model.get_loss_dict(outputs, batch, metrics)
    assert float(metrics["iga_applied"]) == 1.0 and metrics["iga_end"] >= 1
    loss = sum(loss_dict.values())
    params = model.get_param_groups()["fields"]
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    true_grads = torch.autograd.grad(model.curvature_loss(outputs, batch), params)  # the true loss (for ESGD)
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(not torch.allclose(g, t) for g, t in zip(grads, true_grads, strict=True))  # adjusted, not the MSE


# ------------------------------------------------------------------------------------------------- the method
def test_gauss_nerf_defaults() -> None:
    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDOptimizerConfig, ESGDTrainerConfig
    from nerf_inr_methods.nerfstudio_plugin.method_configs import gauss_nerf

    config = gauss_nerf.config
    model = config.pipeline.model
    assert isinstance(config, ESGDTrainerConfig) and config.method_name == "gauss-nerf"
    assert (model.field_type, model.gaussian_sigma, model.hierarchical_sampling) == ("gaussian", 0.1, False)
    assert model.num_coarse_samples == 128
    assert (model.base_mlp_num_layers, model.base_mlp_layer_width) == (8, 256)
    assert (model.head_mlp_num_layers, model.head_mlp_layer_width) == (1, 128)
    assert config.pipeline.datamanager.train_num_rays_per_batch == 2048
    assert config.optimizer == "esgd"
    selected = config.selected_optimizers(["fields"])["fields"]
    assert isinstance(selected["optimizer"], ESGDOptimizerConfig) and selected["optimizer"].lr == 10.0
    assert selected["scheduler"].lr_final == 0.1 and selected["scheduler"].max_steps == config.max_num_iterations


def _small_run(tiny_scene: Path, tmp_path: Path, optimizer: str, steps: int, timestamp: str, **extra: Any):
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    overrides: Dict[str, Any] = {
        "optimizer": optimizer,
        "pipeline.datamanager.train_num_rays_per_batch": 64,
        "pipeline.model.num_coarse_samples": 16,
        "pipeline.model.base_mlp_num_layers": 6,
        "pipeline.model.base_mlp_layer_width": 32,
        "pipeline.model.head_mlp_layer_width": 16,
        "pipeline.model.eval_num_rays_per_chunk": 1024,
    }
    overrides.update(extra)
    config = prepare_config("gauss-nerf", tiny_scene, tmp_path, steps=steps, timestamp=timestamp, overrides=overrides)
    config.optimizer_presets["esgd"]["optimizer"].d_warmup = 2
    config.optimizer_presets["esgd"]["optimizer"].update_d_every = 3
    return config


@pytest.mark.slow
def test_gauss_nerf_trains_and_evaluates_with_esgd_and_adam(tiny_scene: Path, tmp_path: Path) -> None:
    """CPU smoke: gauss-nerf (ESGD) and its --optimizer adam control train a few steps, save, and ns-eval."""
    from nerf_inr_methods.nerfstudio_plugin.runs import evaluate, train

    results: Dict[str, Tuple[Dict[str, float], Dict[str, Any]]] = {}
    for optimizer in ("esgd", "adam"):
        config_path = train(_small_run(tiny_scene, tmp_path, optimizer, steps=5, timestamp=optimizer))
        metrics = evaluate(config_path)
        checkpoint = torch.load(next((config_path.parent / "nerfstudio_models").glob("*.ckpt")), map_location="cpu")
        results[optimizer] = (metrics, checkpoint)
        assert 0.0 < metrics["psnr"] < 60.0 and "fine_ssim" in metrics
    esgd_state = results["esgd"][1]["optimizers"]["fields"]["esgd"]
    assert esgd_state["num_steps"] == 5 and esgd_state["num_curvature_steps"] == 3  # steps 0, 1 (warm-up) and 4
    assert "esgd" not in results["adam"][1]["optimizers"]["fields"]
    scheduler = results["esgd"][1]["schedulers"]["fields"]
    assert scheduler["_last_lr"] == [pytest.approx(0.1)] and type(scheduler["_last_lr"][0]) is float


def test_benchmark_counts_double_backward_steps_like_esgd() -> None:
    from benchmarks.gauss_esgd import curvature_steps
    from nerf_inr_methods.core.esgd import ESGD

    net = nn.Linear(1, 1)
    x = torch.ones(1, 1)
    for steps in (30, 50, 149, 150, 260):
        opt = ESGD(net.parameters(), lr=0.0, hvp_source="gradient")  # same schedule, no double backward
        for _ in range(steps):
            opt.zero_grad()
            net(x).sum().backward()
            opt.step()
        assert curvature_steps(steps) == opt.num_curvature_steps, steps


@pytest.mark.slow
@pytest.mark.shared_data
def test_gauss_esgd_benchmark_quick(shared_data: Path, tmp_path: Path) -> None:
    """benchmarks/gauss_esgd.py: tuning, every arm, the summary and the JSON, in a few steps on the real mic."""
    import json
    import math

    from benchmarks.gauss_esgd import ARMS, GaussEsgdConfig, main

    config = GaussEsgdConfig(
        data=shared_data / "blender" / "mic", steps=4, eval_every=2, view_every=200, seeds=(0,), tune_steps=2,
        max_extensions=0, jobs=1, out="gauss_esgd_test", results_dir=tmp_path,
    )  # fmt: skip
    payload = main(config)
    assert payload["summary_line"].startswith("SUMMARY gauss_esgd")
    assert set(payload["runs"]["0"]) == set(ARMS)
    assert {len(v) for v in payload["tuning"]["val_psnr"].values()} == {3}  # 3 lrs per tuned arm
    for history in payload["runs"]["0"].values():
        assert history["step"] == [2, 4] and all(math.isfinite(p) for p in history["psnr"])
    saved = json.loads((tmp_path / "gauss_esgd_test.json").read_text())
    assert saved["summary_line"] == payload["summary_line"]
