"""nerfstudio method specifications (entry points ``nerfstudio.method_configs``).

Every method is the same :class:`InrNeRFModel` (vanilla NeRF + switches) with different switches, so a
comparison between two methods, or between a method and its control, changes one thing.
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.engine.optimizers import RAdamOptimizerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDTrainerConfig, RunLengthExponentialDecaySchedulerConfig
from nerf_inr_methods.nerfstudio_plugin.inr_nerf import InrNeRFModelConfig
from nerf_inr_methods.nerfstudio_plugin.int_pipeline import InrPipelineConfig
from nerf_inr_methods.nerfstudio_plugin.offline import install as install_offline_fixes

install_offline_fixes()  # loaded by ns-train / ns-eval / ns-render through the entry points


def nerf_trainer_config(method_name: str, model: InrNeRFModelConfig) -> ESGDTrainerConfig:
    """nerfstudio's vanilla-nerf training set-up (Blender data, RAdam 5e-4) around one of our models.

    The lr is constant unless ``--optimizers.fields.scheduler.lr-final`` is given: then it decays exponentially to
    that value over the run (``--max-num-iterations``; ``--optimizers.fields.scheduler.max-steps`` to override).

    The trainer is :class:`ESGDTrainer`: nerfstudio's Trainer unless ``--optimizer esgd`` (or an ESGD optimizer
    config) asks for ESGD's curvature steps.
    """
    return ESGDTrainerConfig(
        method_name=method_name,
        pipeline=InrPipelineConfig(
            datamanager=VanillaDataManagerConfig(dataparser=BlenderDataParserConfig()),
            model=model,
        ),
        optimizers={
            "fields": {
                "optimizer": RAdamOptimizerConfig(lr=5e-4, eps=1e-08),
                "scheduler": RunLengthExponentialDecaySchedulerConfig(),  # lr_final None: constant lr
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 12),
        # nerfstudio defaults to CUDA and crashes without it; ours train wherever they are run.
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        vis="viewer",
    )


inr_nerf = MethodSpecification(
    config=nerf_trainer_config("inr-nerf", InrNeRFModelConfig()),
    description="Vanilla NeRF with nerf-inr-methods' switches (all off by default: the control for every method).",
)


def _int_nerf_config() -> TrainerConfig:
    config = nerf_trainer_config("int-nerf", InrNeRFModelConfig())
    config.pipeline.int_enabled = True
    return config


int_nerf = MethodSpecification(
    config=_int_nerf_config(),
    description="Vanilla NeRF trained on INT-selected rays: each step the largest-error rays of a scored "
    "candidate pool (ratio/interval schedules; --pipeline.int-random-subset True is its control).",
)


def _int_map_nerf_config() -> ESGDTrainerConfig:
    config = nerf_trainer_config("int-map-nerf", InrNeRFModelConfig())
    pipeline = config.pipeline
    pipeline.int_enabled, pipeline.int_sampler = True, "error-map"
    pipeline.int_ratio_kind, pipeline.int_r0, pipeline.int_pool_batches = "constant", 1.0, 4
    return config


int_map_nerf = MethodSpecification(
    config=_int_map_nerf_config(),
    description="Vanilla NeRF whose rays are drawn by error: a per-pixel error map written by every training "
    "forward (no scoring pass) picks each step's batch from 4 batches of candidates, with importance weights "
    "(the converged comparison's fastest sampler; int-nerf is the paper's INT).",
)


iga_nerf = MethodSpecification(
    config=nerf_trainer_config("iga-nerf", InrNeRFModelConfig(iga=True)),
    description="Vanilla NeRF whose fine field trains on IGA's adjusted gradient (eNTK spectrum balanced over the "
    "rays of each batch; --pipeline.model.iga-end, --pipeline.model.iga-identity True is its control).",
)


def _gauss_nerf_config() -> ESGDTrainerConfig:
    model = InrNeRFModelConfig(
        field_type="gaussian",
        gaussian_sigma=0.1,
        hierarchical_sampling=False,
        num_coarse_samples=128,
        head_mlp_num_layers=1,
    )
    config = nerf_trainer_config("gauss-nerf", model)
    config.optimizer = "esgd"
    config.max_num_iterations = 200_000
    config.pipeline.datamanager.train_num_rays_per_batch = 2048
    return config


gauss_nerf = MethodSpecification(
    config=_gauss_nerf_config(),
    description="GARF-style NeRF: one field of Gaussian activations on raw xyz (no positional encoding, sigma 0.1), "
    "128 stratified samples, trained with robust ESGD (lr 10 -> 0.1; --optimizer adam is its control).",
)
