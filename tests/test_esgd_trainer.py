"""ESGDTrainer: create_graph only on ESGD's curvature steps, IGA's true-loss hook, schedulers, refusals, parity,
save/load/resume and the --optimizer switch."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch
from torch import nn

from nerf_inr_methods.core.esgd import ESGD, RECIPES
from nerf_inr_methods.core.mlp import make_mlp

BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------------------------- configs
def test_esgd_optimizer_config_builds_esgd_through_nerfstudio_optimizers() -> None:
    from nerfstudio.engine.optimizers import Optimizers

    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDOptimizerConfig

    params = list(nn.Linear(3, 2).parameters())
    config = ESGDOptimizerConfig(lr=0.5, d_warmup=3, update_d_every=7, hvp_source="gradient")
    optimizers = Optimizers({"fields": {"optimizer": config, "scheduler": None}}, {"fields": params})
    opt = optimizers.optimizers["fields"]
    assert isinstance(opt, ESGD)
    assert (opt.d_warmup, opt.update_d_every, opt.hvp_source) == (3, 7, "gradient")
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["eps"] == 1e-4
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.generator is None
    assert (opt.init_draws, opt.lr_warmup) == (RECIPES["robust"]["init_draws"], RECIPES["robust"]["lr_warmup"])
    seeded = ESGDOptimizerConfig(rademacher_seed=3, recipe="official", lr=1.0).setup(params)
    assert seeded.generator is not None and seeded.param_groups[0]["lr"] == 1.0
    # no lr given: the recipe's NeRF lr (core.esgd.default_lr): robust 10, official 1 (the paper's)
    assert ESGDOptimizerConfig().setup(params).param_groups[0]["lr"] == 10.0
    assert ESGDOptimizerConfig(recipe="official").setup(params).param_groups[0]["lr"] == 1.0
    assert (seeded.init_draws, seeded.d_bias_correction) == (1, "all_steps")


def test_seeded_esgd_leaves_the_global_random_stream_alone() -> None:
    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDOptimizerConfig

    net = make_mlp(2, 1, width=4, depth=1, activation="gaussian", sigma=0.5)
    opt = ESGDOptimizerConfig(rademacher_seed=0).setup(list(net.parameters()))
    x = torch.rand(8, 2)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    net(x).pow(2).mean().backward(create_graph=opt.should_create_graph())
    opt.step()
    assert opt.num_curvature_steps == 1 and torch.equal(torch.rand(3), expected)


def test_run_length_decay_is_nerfstudios_exponential_decay(tmp_path: Path) -> None:
    from nerfstudio.engine.schedulers import ExponentialDecayScheduler

    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import RunLengthExponentialDecaySchedulerConfig
    from nerf_inr_methods.nerfstudio_plugin.offline import install

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=1.0)
    config = RunLengthExponentialDecaySchedulerConfig(lr_final=0.01, max_steps=4)
    assert config.warmup_steps == 0  # no warm-up: lr(t) = lr * (lr_final / lr) ** min(t / max_steps, 1)
    scheduler_maker = config.setup()
    assert isinstance(scheduler_maker, ExponentialDecayScheduler)
    scheduler = scheduler_maker.get_scheduler(opt, lr_init=1.0)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 0.01**0.25, 0.1, 0.01**0.75, 0.01, 0.01])
    install()  # nerfstudio's scheduler states hold numpy floats: allow-listed for torch.load(weights_only=True)
    path = tmp_path / "s.ckpt"
    torch.save({"schedulers": {"fields": scheduler.state_dict()}}, path)
    loaded = torch.load(path, weights_only=True)["schedulers"]["fields"]
    assert loaded["last_epoch"] == 6 and loaded["_last_lr"] == [pytest.approx(0.01)]
    with pytest.raises(ValueError, match="max_steps is None"):
        RunLengthExponentialDecaySchedulerConfig(lr_final=0.01).setup().get_scheduler(opt, lr_init=1.0)
    RunLengthExponentialDecaySchedulerConfig().setup().get_scheduler(opt, lr_init=1.0)  # lr_final None: constant lr
    ratio = RunLengthExponentialDecaySchedulerConfig(lr_final_ratio=0.01, max_steps=2).setup()
    ratio.get_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=4.0), lr_init=4.0)
    assert ratio.config.lr_final == pytest.approx(0.04)  # lr_final from the ratio and the optimizer's lr


def test_optimizer_switch_selects_presets() -> None:
    from nerfstudio.engine.optimizers import AdamOptimizerConfig, RAdamOptimizerConfig

    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDOptimizerConfig, ESGDTrainerConfig

    config = ESGDTrainerConfig(
        optimizers={"fields": {"optimizer": RAdamOptimizerConfig(lr=5e-4), "scheduler": None}},
        max_num_iterations=123,
    )
    configured = config.selected_optimizers(["fields"])["fields"]
    assert isinstance(configured["optimizer"], RAdamOptimizerConfig) and configured["scheduler"] is None
    config.optimizer = "esgd"
    esgd = config.selected_optimizers(["fields", "other"])
    assert set(esgd) == {"fields", "other"}
    assert isinstance(esgd["other"]["optimizer"], ESGDOptimizerConfig) and esgd["other"]["optimizer"].lr == 10.0
    assert esgd["fields"]["scheduler"].max_steps == 123 and esgd["fields"]["scheduler"].lr_final == 0.1
    assert config.optimizer_presets["esgd"]["scheduler"].max_steps is None  # the config itself is not modified
    config.optimizer_presets["esgd"]["optimizer"].recipe = "official"  # the paper's NeRF schedule, lr 1 -> 0.01
    official = config.selected_optimizers(["fields"])["fields"]
    assert official["optimizer"].lr == 1.0 and official["scheduler"].lr_final == pytest.approx(0.01)
    config.optimizer_presets["esgd"]["optimizer"].lr = 0.5  # a given lr rules, and the decay follows it (100x)
    assert config.selected_optimizers(["fields"])["fields"]["scheduler"].lr_final == pytest.approx(0.005)
    assert esgd["fields"]["optimizer"] is not esgd["other"]["optimizer"]
    config.optimizer = "adam"
    adam = config.selected_optimizers(["fields"])["fields"]
    assert isinstance(adam["optimizer"], AdamOptimizerConfig) and adam["optimizer"].lr == 5e-4
    assert adam["scheduler"].lr_final == 1e-4
    config.optimizer = "sgd"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="--optimizer must be one of"):
        config.selected_optimizers(["fields"])


def test_optimizer_switch_parses_from_the_command_line() -> None:
    import tyro

    from nerf_inr_methods.nerfstudio_plugin.method_configs import gauss_nerf

    default = copy.deepcopy(gauss_nerf.config)
    args = ["--optimizer", "adam", "--optimizer-presets.adam.optimizer.lr", "0.002"]
    args += ["--optimizer-presets.esgd.optimizer.hvp-source", "gradient"]
    args += [
        "--optimizer-presets.esgd.optimizer.recipe",
        "official",
        "--optimizer-presets.esgd.optimizer.init-draws",
        "3",
    ]
    parsed = tyro.cli(type(default), default=default, args=args)
    assert parsed.optimizer == "adam"
    assert parsed.selected_optimizers(["fields"])["fields"]["optimizer"].lr == 0.002
    esgd = parsed.optimizer_presets["esgd"]["optimizer"]
    assert (esgd.hvp_source, esgd.recipe, esgd.init_draws) == ("gradient", "official", 3)
    assert esgd.resolved()["lr_warmup"] == RECIPES["official"]["lr_warmup"]


# ----------------------------------------------------------------------------- the trainer on a small MLP
class MLPPipeline(nn.Module):
    """Stands in for a nerfstudio pipeline: a small Gaussian MLP regressing fixed targets (float64).

    ``surrogate=True`` returns an IGA-like training loss (``(2/N) sum(f * stopgrad(S r))``) and the graph-carrying
    true MSE as the step's curvature loss, as InrPipeline does for InrNeRFModel (``get_train_losses``).
    """

    def __init__(self, surrogate: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = make_mlp(2, 2, width=8, depth=2, activation="gaussian", sigma=0.5).double()
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(16, 2, generator=g, dtype=torch.float64) * 2 - 1
        self.y = torch.rand(16, 2, generator=g, dtype=torch.float64)
        self.s = torch.eye(16, dtype=torch.float64) + 0.3 * torch.rand(16, 16, generator=g, dtype=torch.float64)
        self.surrogate = surrogate

    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        return {"fields": list(self.model.parameters())}

    def losses(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(training loss, true loss)."""
        pred = self.model(self.x)
        true = torch.mean((pred - self.y) ** 2)
        if not self.surrogate:
            return true, true
        adjusted = (self.s @ (pred - self.y)).detach()
        return 2.0 / pred.numel() * torch.sum(pred * adjusted), true

    def get_train_losses(self, step: int):
        loss, true = self.losses()
        metrics: Dict[str, Any] = {"true_loss": true.detach()}
        return {}, {"loss": loss}, metrics, (true if self.surrogate else None)


def make_trainer(tmp_path: Path, pipeline: MLPPipeline, **config: Any):
    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDTrainerConfig

    trainer_config = ESGDTrainerConfig(
        method_name="mlp", output_dir=tmp_path, optimizer="esgd", max_num_iterations=8, **config
    )
    trainer_config.machine.device_type = "cpu"
    preset = trainer_config.optimizer_presets["esgd"]["optimizer"]
    preset.lr, preset.d_warmup, preset.update_d_every = 0.05, 2, 3
    preset.recipe = "official"  # the reference run uses ESGD's constructor defaults (the official recipe)
    trainer_config.optimizer_presets["esgd"]["scheduler"].lr_final = 0.0005  # absolute, as nerfstudio's schedulers
    trainer = trainer_config.setup(local_rank=0, world_size=1)
    trainer.pipeline = pipeline  # type: ignore[assignment]
    trainer.optimizers = trainer.setup_optimizers()
    return trainer


def reference_run(pipeline: MLPPipeline, steps: int, split: bool) -> List[torch.Tensor]:
    """ESGD used directly as core/esgd.py documents it, with the trainer's lr decay (0.05 -> 0.0005 over 8 steps)."""
    params = list(pipeline.model.parameters())
    opt = ESGD(params, lr=0.05, d_warmup=2, update_d_every=3)
    torch.manual_seed(42)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 0.05 * 0.01 ** min(step / 8, 1.0)
        opt.zero_grad()
        loss, true = pipeline.losses()
        if split:
            opt.accumulate_curvature(true)
        loss.backward(create_graph=opt.should_create_graph())
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("surrogate", [False, True])
def test_trainer_matches_esgd_used_directly(tmp_path: Path, surrogate: bool) -> None:
    """create_graph exactly on curvature steps (0, 1 warm-up, then every 3rd: 4, 7), graphs released after each
    step; with a surrogate loss, the curvature comes from the true loss (same parameters as the documented recipe)."""
    pipeline = MLPPipeline(surrogate)
    expected = reference_run(MLPPipeline(surrogate), 8, split=surrogate)
    trainer = make_trainer(tmp_path, pipeline)
    graphs: List[bool] = []
    original_backward = torch.Tensor.backward

    def spy(self, *args: Any, **kwargs: Any) -> None:
        graphs.append(bool(kwargs.get("create_graph", False)))
        return original_backward(self, *args, **kwargs)

    torch.manual_seed(42)
    curvature = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "backward", spy)
        for step in range(8):
            _, _, metrics = trainer.train_iteration(step)
            curvature.append(float(metrics["esgd_curvature_step"]))
            assert all(p.grad is None or p.grad.grad_fn is None for p in pipeline.parameters())
    assert curvature == [1, 1, 0, 0, 1, 0, 0, 1]
    assert graphs == ([False] * 8 if surrogate else [bool(c) for c in curvature])
    for p, e in zip(pipeline.model.parameters(), expected, strict=True):
        assert torch.allclose(p, e, rtol=1e-10, atol=1e-12)
    opt = trainer.optimizers.optimizers["fields"]
    assert opt.num_curvature_steps == 4 and opt.param_groups[0]["lr"] == pytest.approx(0.0005)


def test_surrogate_curvature_differs_from_taking_it_on_the_surrogate(tmp_path: Path) -> None:
    """The hook matters: curvature of the surrogate (whose gradient field differs) gives another trajectory."""
    right = reference_run(MLPPipeline(True), 3, split=True)
    wrong = reference_run(MLPPipeline(True), 3, split=False)
    assert any(not torch.allclose(r, w) for r, w in zip(right, wrong, strict=True))


def test_trainer_with_gradient_clipping_and_g2_ablation(tmp_path: Path) -> None:
    pipeline = MLPPipeline()
    trainer = make_trainer(tmp_path, pipeline)
    trainer.config.optimizer_presets["esgd"]["optimizer"].max_norm = 1e-3
    trainer.config.optimizer_presets["esgd"]["optimizer"].hvp_source = "gradient"
    trainer.optimizers = trainer.setup_optimizers()
    before = [p.detach().clone() for p in pipeline.parameters()]
    for step in range(3):
        trainer.train_iteration(step)
    assert trainer.optimizers.optimizers["fields"].num_curvature_steps == 2
    assert any(not torch.equal(b, p) for b, p in zip(before, pipeline.parameters(), strict=True))


def test_curvature_loss_must_carry_its_graph() -> None:
    from types import SimpleNamespace

    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import train_losses

    true = torch.tensor(1.0, requires_grad=True) * 2.0
    step = ({}, {"loss": true}, {})
    assert train_losses(SimpleNamespace(get_train_losses=lambda s: (*step, None)), 0)[3] is None
    assert train_losses(SimpleNamespace(get_train_losses=lambda s: (*step, true)), 0)[3] is true
    with pytest.raises(ValueError, match="graph-carrying"):
        train_losses(SimpleNamespace(get_train_losses=lambda s: (*step, true.detach())), 0)
    # a model that names a curvature loss needs a pipeline that can ask it (InrPipeline)
    plain = SimpleNamespace(get_train_loss_dict=lambda step: step, model=SimpleNamespace(curvature_loss=None))
    with pytest.raises(ValueError, match="InrPipeline"):
        train_losses(plain, 0)


@pytest.mark.parametrize("flag", ["mixed_precision", "use_grad_scaler"])
def test_esgd_refuses_mixed_precision(tmp_path: Path, flag: str) -> None:
    with pytest.raises(ValueError, match="mixed-precision"):
        make_trainer(tmp_path, MLPPipeline(), **{flag: True})
    # nerfstudio's optimizers keep nerfstudio's behaviour (CPU simply disables mixed precision)
    from nerfstudio.engine.optimizers import RAdamOptimizerConfig

    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDTrainerConfig

    config = ESGDTrainerConfig(method_name="mlp", output_dir=tmp_path, **{flag: True})
    config.optimizers = {"fields": {"optimizer": RAdamOptimizerConfig(lr=1e-3), "scheduler": None}}
    config.machine.device_type = "cpu"
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.pipeline = MLPPipeline()
    trainer.setup_optimizers()


# -------------------------------------------------------------------------------- nerfstudio pipelines
def _tiny_config(method: str, tiny_scene: Path, tmp_path: Path, steps: int, timestamp: str, **overrides: Any):
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    small: Dict[str, Any] = {
        "pipeline.datamanager.train_num_rays_per_batch": 32,
        "pipeline.model.num_coarse_samples": 8,
        "pipeline.model.num_importance_samples": 8,
        "pipeline.model.base_mlp_num_layers": 6,
        "pipeline.model.base_mlp_layer_width": 16,
        "pipeline.model.head_mlp_layer_width": 8,
        "pipeline.model.eval_num_rays_per_chunk": 1024,
    }
    small.update(overrides)
    return prepare_config(method, tiny_scene, tmp_path, steps=steps, timestamp=timestamp, overrides=small)


@pytest.mark.slow
def test_radam_methods_train_exactly_like_nerfstudios_trainer(tiny_scene: Path, tmp_path: Path) -> None:
    """Every method's trainer is ESGDTrainer; without ESGD its steps equal nerfstudio's Trainer's bit for bit."""
    from nerfstudio.engine.trainer import Trainer
    from nerfstudio.scripts.train import _set_random_seed

    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDTrainer

    params = []
    for target in (Trainer, ESGDTrainer):
        config = _tiny_config("inr-nerf", tiny_scene, tmp_path, 3, target.__name__)
        config._target = target
        _set_random_seed(config.machine.seed)
        trainer = config.setup(local_rank=0, world_size=1)
        assert type(trainer) is target
        trainer.setup()
        losses = [float(trainer.train_iteration(step)[0]) for step in range(3)]
        params.append(([p.detach().clone() for p in trainer.pipeline.parameters()], losses))
    (ns_params, ns_losses), (our_params, our_losses) = params
    assert ns_losses == our_losses
    assert all(torch.equal(a, b) for a, b in zip(ns_params, our_params, strict=True))


@pytest.mark.slow
def test_esgd_save_load_resume(tiny_scene: Path, tmp_path: Path) -> None:
    """ESGD's counters and moments, and the lr schedule, survive a checkpoint (torch.load weights_only) and resume."""
    from nerf_inr_methods.nerfstudio_plugin.runs import train

    def config(steps: int, timestamp: str):
        c = _tiny_config("gauss-nerf", tiny_scene, tmp_path, steps, timestamp, optimizer="esgd")
        c.optimizer_presets["esgd"]["optimizer"].d_warmup = 2
        c.optimizer_presets["esgd"]["optimizer"].update_d_every = 3
        return c

    first = train(config(4, "first"))
    ckpt_dir = first.parent / "nerfstudio_models"
    state = torch.load(ckpt_dir / "step-000000003.ckpt", weights_only=True)
    assert state["optimizers"]["fields"]["esgd"]["num_curvature_steps"] == 2  # steps 0, 1
    assert state["schedulers"]["fields"]["last_epoch"] == 4

    resumed = config(4, "resumed")
    resumed.load_dir = ckpt_dir
    path = train(resumed)
    final = torch.load(path.parent / "nerfstudio_models" / "step-000000007.ckpt", weights_only=True)
    esgd = final["optimizers"]["fields"]["esgd"]
    assert esgd["num_steps"] == 8 and esgd["num_curvature_steps"] == 4  # steps 0, 1, 4, 7
    scheduler = final["schedulers"]["fields"]
    assert scheduler["last_epoch"] == 8 and scheduler["_last_lr"] == [pytest.approx(0.1)]
    moved = [
        not torch.equal(state["pipeline"][k], final["pipeline"][k]) for k in state["pipeline"] if "field_fine" in k
    ]
    assert any(moved)


@pytest.mark.slow
def test_ns_train_help_shows_the_optimizer_switch(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "ns-train"), "gauss-nerf", "--help"], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = " ".join(result.stdout.split())
    assert "--optimizer {configured,esgd,adam}" in text
    assert "--optimizer-presets.esgd.optimizer.hvp-source" in text


@pytest.mark.parametrize("flush", [True, False])
def test_trainer_flushes_denormals_on_cpu(tiny_scene: Path, tmp_path: Path, flush: bool) -> None:
    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers, prepare_config

    config = prepare_config("inr-nerf", tiny_scene, tmp_path, steps=1, overrides={"flush_denormal": flush})
    config.machine.device_type = "cpu"
    torch.set_flush_denormal(False)
    try:
        with own_event_writers():
            config.setup(local_rank=0, world_size=1).setup()
        tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 denormal
        assert (float(tiny * 1.0) == 0.0) == flush
    finally:
        torch.set_flush_denormal(False)
