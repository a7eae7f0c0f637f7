"""Named sets of config overrides, usable as ``ns-train`` flags or applied to a config in Python.

The CPU preset makes a NeRF training step take well under a second on a 2-core CPU, for tests, benchmarks and
trying things out; it changes sizes only (samples, widths, batch), never what a method does. The demo preset is
the CPU preset with fewer samples per ray, for the small synthetic scene of ``./run.sh demo``. The nerfacto CPU
preset does the same for the nerfacto methods (``inr-nerfacto``, ``int-map-nerfacto``; nerfstudio's ``nerfacto``
too): smaller hash tables and fewer samples per ray, the torch hash grid (found by ``benchmarks/nerfacto_cpu.py``).

``python -m nerf_inr_methods.nerfstudio_plugin.presets [cpu|demo|nerfacto-cpu]`` prints a preset's ns-train flags.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

# Dotted attribute paths on a nerfstudio TrainerConfig -> value.
CPU_PRESET: Dict[str, Any] = {
    "pipeline.datamanager.train_num_rays_per_batch": 256,
    "pipeline.datamanager.eval_num_rays_per_batch": 1024,
    "pipeline.model.num_coarse_samples": 32,
    "pipeline.model.num_importance_samples": 32,
    "pipeline.model.base_mlp_layer_width": 64,
    "pipeline.model.head_mlp_layer_width": 32,
    "pipeline.model.eval_num_rays_per_chunk": 4096,
}

DEMO_PRESET: Dict[str, Any] = {
    **CPU_PRESET,
    "pipeline.model.num_coarse_samples": 16,
    "pipeline.model.num_importance_samples": 16,
}
"""The CPU preset with half the samples per ray, for the demo's small synthetic scene (64 px, objects filling the
middle of the near-far range): steps ~1.5x faster and, on that scene, no worse per step (measured in the README)."""

NERFACTO_CPU_PRESET: Dict[str, Any] = {
    "pipeline.datamanager.train_num_rays_per_batch": 256,
    "pipeline.datamanager.eval_num_rays_per_batch": 1024,
    "pipeline.model.implementation": "torch",
    "pipeline.model.log2_hashmap_size": 15,
    "pipeline.model.num_levels": 12,
    "pipeline.model.max_res": 512,
    "pipeline.model.proposal_net_args_list.0.log2_hashmap_size": 14,
    "pipeline.model.proposal_net_args_list.1.log2_hashmap_size": 14,
    "pipeline.model.num_proposal_samples_per_ray": (64, 32),
    "pipeline.model.num_nerf_samples_per_ray": 32,
    "pipeline.model.eval_num_rays_per_chunk": 4096,
}
"""nerfacto on a CPU: the torch hash grid (no tiny-cuda-nn) with a 2^15-entry table of 12 levels up to resolution 512
(nerfacto: 2^19, 16 levels, 2048) and 2^14-entry proposal tables (2^17); 64 + 32 proposal and 32 field samples per ray
(256 + 96 and 48); 256 rays per step (4096). On CPU the dense gradient and Adam update of every table entry, every
step, dominate: measured interleaved on 2 shared cores at 1 thread, 0.16 s per step against 1.37 s for nerfacto's
sizes and 0.33 s for a 2^17-entry, 12-level table (benchmarks/results/nerfacto_cpu.json)."""

PRESETS: Dict[str, Dict[str, Any]] = {"cpu": CPU_PRESET, "demo": DEMO_PRESET, "nerfacto-cpu": NERFACTO_CPU_PRESET}


def preset_flags(name: str = "cpu") -> List[str]:
    """The preset as ``ns-train`` command-line flags, e.g. ``--pipeline.model.num-coarse-samples 32`` (a tuple's
    items as separate arguments: ``--pipeline.model.num-proposal-samples-per-ray 64 32``)."""
    flags: List[str] = []
    for path, value in _preset(name).items():
        values = [str(v) for v in value] if isinstance(value, (tuple, list)) else [str(value)]
        flags += ["--" + path.replace("_", "-"), *values]
    return flags


def apply_preset(config: Any, name: str = "cpu") -> Any:
    """Set the preset's values on a TrainerConfig in place; paths the config lacks raise AttributeError."""
    for path, value in _preset(name).items():
        target, leaf = _parent(config, path)
        if isinstance(target, dict):  # an entry of a list of dicts, e.g. nerfacto's proposal_net_args_list.0
            if leaf not in target:
                raise AttributeError(f"preset {name!r}: the dict at {path} has no key {leaf!r}")
            target[leaf] = value
            continue
        if not hasattr(target, leaf):
            raise AttributeError(f"preset {name!r}: {type(target).__name__} has no field {leaf!r} ({path})")
        setattr(target, leaf, value)
    return config


def matching_preset(config: Any) -> str | None:
    """The name of the first preset whose every value the TrainerConfig has, or None (e.g. a run with its own sizes)."""
    for name, values in PRESETS.items():
        try:
            if all(_get(*_parent(config, path)) == value for path, value in values.items()):
                return name
        except (AttributeError, IndexError, KeyError):  # a config without one of the preset's fields matches none
            continue
    return None


def _parent(config: Any, path: str) -> Tuple[Any, str]:
    """(the object holding a dotted path's last field, that field's name); AttributeError if a parent is missing."""
    *parents, leaf = path.split(".")
    for part in parents:
        config = config[int(part)] if isinstance(config, (list, tuple)) else _get(config, part)
    return config, leaf


def _get(config: Any, name: str) -> Any:
    """A dataclass field or a dict entry."""
    return config[name] if isinstance(config, dict) else getattr(config, name)


def _preset(name: str) -> Dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


if __name__ == "__main__":
    import sys

    chosen = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    if chosen not in PRESETS:
        sys.exit(f"presets: unknown preset {chosen!r}; expected one of {sorted(PRESETS)}")
    print(" ".join(preset_flags(chosen)))
