"""nerfstudio method specifications (entry points ``nerfstudio.method_configs``).

Every NeRF method is the same :class:`InrNeRFModel` (vanilla NeRF + switches) with different switches, so a
comparison between two methods, or between a method and its control, changes one thing. The nerfacto methods are
nerfacto (:class:`InrNerfactoModel`, which takes per-ray loss weights) through the same pipeline and trainer:
``inr-nerfacto`` with uniform rays (the control), ``int-map-nerfacto`` with rays drawn by the error map.
"""

from __future__ import annotations

import torch
from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig, RAdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import ESGDTrainerConfig, RunLengthExponentialDecaySchedulerConfig
from nerf_inr_methods.nerfstudio_plugin.inr_nerf import InrNeRFModelConfig
from nerf_inr_methods.nerfstudio_plugin.inr_nerfacto import InrNerfactoModelConfig
from nerf_inr_methods.nerfstudio_plugin.int_pipeline import InrPipelineConfig, error_map_pipeline
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
    config.pipeline = error_map_pipeline(config.pipeline)
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


def nerfacto_trainer_config(method_name: str, model: InrNerfactoModelConfig | None = None) -> ESGDTrainerConfig:
    """nerfstudio's nerfacto training set-up around :class:`InrNerfactoModel`, through our pipeline and trainer.

    nerfacto's values (nerfstudio 1.1's ``method_configs["nerfacto"]``): 30000 steps, 4096 rays per batch, Adam lr
    1e-2 (eps 1e-15) on the proposal networks and the field decaying to 1e-4 over 200000 steps, camera optimizer
    SO3xR3, mixed precision (off on CPU, as nerfstudio's Trainer does), nerfstudio-data parser (``blender-data``,
    ``llff-data``, ... as a subcommand). One difference: the single-process ``VanillaDataManager`` instead of
    nerfacto's ``ParallelDataManager``, which draws rays in a worker process whose random state a resumed INT run
    could not restore (and which costs a core on a CPU run). The model's torch hash grid is used where tiny-cuda-nn
    is missing (``--pipeline.model.implementation``); ``presets.NERFACTO_CPU_PRESET`` sizes it for a CPU.
    """
    return ESGDTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30000,
        mixed_precision=True,
        pipeline=InrPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=NerfstudioDataParserConfig(), train_num_rays_per_batch=4096, eval_num_rays_per_batch=4096
            ),
            model=model
            or InrNerfactoModelConfig(
                eval_num_rays_per_chunk=1 << 15,
                average_init_density=0.01,
                camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
            ),
        ),
        optimizers={
            "proposal_networks": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
            },
            "fields": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
            },
            "camera_opt": {
                "optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        vis="viewer",
    )


inr_nerfacto = MethodSpecification(
    config=nerfacto_trainer_config("inr-nerfacto"),
    description="nerfacto through nerf-inr-methods' pipeline and trainer with uniform rays (int-map-nerfacto's "
    "control; the same model, datamanager and checkpoints).",
)


def _int_map_nerfacto_config() -> ESGDTrainerConfig:
    config = nerfacto_trainer_config("int-map-nerfacto")
    config.pipeline = error_map_pipeline(config.pipeline)
    return config


int_map_nerfacto = MethodSpecification(
    config=_int_map_nerfacto_config(),
    description="nerfacto whose rays are drawn by error: a per-pixel error map written by every training forward "
    "picks each step's batch from 4 batches of candidates, the RGB loss importance-weighted (nerfacto's defaults "
    "otherwise; inr-nerfacto is its control).",
)
