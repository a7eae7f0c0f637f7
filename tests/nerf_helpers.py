"""Small InrNeRFModels, pipeline overrides and ray bundles shared by the NeRF tests (importable: pytest puts tests/
on the path)."""

from __future__ import annotations

from typing import Any, Dict

import torch

GAUSSIAN_SINGLE_FIELD: Dict[str, Any] = dict(field_type="gaussian", hierarchical_sampling=False)
"""Overrides that make :func:`small_model` gauss-nerf's single Gaussian field."""

SMALL_PIPELINE: Dict[str, Any] = {
    "pipeline.datamanager.train_num_rays_per_batch": 64,
    "pipeline.model.num_coarse_samples": 8,
    "pipeline.model.num_importance_samples": 8,
    "pipeline.model.base_mlp_num_layers": 2,
    "pipeline.model.head_mlp_num_layers": 1,
    "pipeline.model.eval_num_rays_per_chunk": 1024,
}
"""``prepare_config`` overrides of a small pipeline (64 rays a step, 8 + 8 samples, 2-layer base MLP)."""


def small_model(**config: Any):
    """A small InrNeRFModel (4x32 base MLP, 8 + 8 samples unless overridden) in training mode, seeded with 0.

    Args:
        config: InrNeRFModelConfig fields overriding the small defaults.
    """
    from nerfstudio.data.scene_box import SceneBox

    from nerf_inr_methods.nerfstudio_plugin.inr_nerf import InrNeRFModelConfig

    options: Dict[str, Any] = dict(num_coarse_samples=8, num_importance_samples=8)
    options |= dict(base_mlp_num_layers=4, base_mlp_layer_width=32, head_mlp_num_layers=1, head_mlp_layer_width=16)
    options.update(config)
    torch.manual_seed(0)
    model = InrNeRFModelConfig(**options).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=4, metadata={}
    )
    return model.train()


def rays_toward_origin(n: int, seed: int, **bundle_fields: Any):
    """RayBundle of n rays from around (0, 0, 4) towards the origin (unit directions, camera 0).

    Args:
        n: number of rays.
        seed: seed of the origins' and directions' jitter.
        bundle_fields: extra RayBundle fields, e.g. ``nears`` / ``fars`` (n, 1).
    """
    from nerfstudio.cameras.rays import RayBundle

    g = torch.Generator().manual_seed(seed)
    origins = torch.tensor([0.0, 0.0, 4.0]) + 0.3 * torch.randn(n, 3, generator=g)
    directions = torch.nn.functional.normalize(-origins + 0.4 * torch.randn(n, 3, generator=g), dim=-1)
    return RayBundle(
        origins=origins,
        directions=directions,
        pixel_area=torch.full((n, 1), 1e-4),
        camera_indices=torch.zeros(n, 1, dtype=torch.long),
        **bundle_fields,
    ), g
