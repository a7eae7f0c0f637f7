"""Named sets of config overrides, usable as ``ns-train`` flags or applied to a config in Python.

The CPU preset makes a NeRF training step take well under a second on a 2-core CPU, for tests, benchmarks and
trying things out; it changes sizes only (samples, widths, batch), never what a method does. The demo preset is
the CPU preset with fewer samples per ray, for the small synthetic scene of ``./run.sh demo``.

``python -m nerf_inr_methods.nerfstudio_plugin.presets [cpu|demo]`` prints a preset's ns-train flags.
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

PRESETS: Dict[str, Dict[str, Any]] = {"cpu": CPU_PRESET, "demo": DEMO_PRESET}


def preset_flags(name: str = "cpu") -> List[str]:
    """The preset as ``ns-train`` command-line flags, e.g. ``--pipeline.model.num-coarse-samples 32``."""
    flags: List[str] = []
    for path, value in _preset(name).items():
        flags += ["--" + path.replace("_", "-"), str(value)]
    return flags


def apply_preset(config: Any, name: str = "cpu") -> Any:
    """Set the preset's values on a TrainerConfig in place; paths the config lacks raise AttributeError."""
    for path, value in _preset(name).items():
        target, leaf = _parent(config, path)
        if not hasattr(target, leaf):
            raise AttributeError(f"preset {name!r}: {type(target).__name__} has no field {leaf!r} ({path})")
        setattr(target, leaf, value)
    return config


def matching_preset(config: Any) -> str | None:
    """The name of the first preset whose every value the TrainerConfig has, or None (e.g. a run with its own sizes)."""
    for name, values in PRESETS.items():
        try:
            if all(getattr(*_parent(config, path)) == value for path, value in values.items()):
                return name
        except AttributeError:  # a config without one of the preset's fields matches none
            continue
    return None


def _parent(config: Any, path: str) -> Tuple[Any, str]:
    """(the object holding a dotted path's last field, that field's name); AttributeError if a parent is missing."""
    *parents, leaf = path.split(".")
    for part in parents:
        config = getattr(config, part)
    return config, leaf


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
