"""Finding runs and grouping them by method: run folders -> ``config.yml`` -> TrainerConfig -> group label."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

IGNORED_KEYS = (
    "timestamp",
    "output_dir",
    "experiment_name",
    "project_name",
    "relative_model_dir",
    "load_dir",
    "load_step",
    "load_config",
    "load_checkpoint",
    "vis",
    "data",
    "steps_per_save",
    "steps_per_eval_batch",
    "steps_per_eval_image",
    "steps_per_eval_all_images",
    "save_only_latest_checkpoint",
    "machine.seed",
    "machine.dist_url",
    "machine.machine_rank",
    "pipeline.datamanager.data",
    "pipeline.datamanager.dataparser.data",
    "pipeline.datamanager.eval_num_rays_per_batch",
    "pipeline.model.eval_num_rays_per_chunk",
)
"""Config keys that do not define a method (paths, logging, evaluation cadence, seeds)."""
IGNORED_PREFIXES = ("viewer.", "logging.")


def find_run_configs(paths: Sequence[Path]) -> List[Path]:
    """``config.yml`` of each run: a config file, a run folder, or a folder searched recursively (sorted)."""
    found: List[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            if path.suffix not in (".yml", ".yaml"):
                raise ValueError(f"--runs {path}: expected a run's config.yml or a folder containing runs")
            found.append(path)
        elif path.is_dir():
            configs = [path / "config.yml"] if (path / "config.yml").is_file() else sorted(path.rglob("config.yml"))
            if not configs:
                raise FileNotFoundError(f"--runs {path}: no config.yml in this folder or below")
            found += configs
        else:
            raise FileNotFoundError(f"--runs {path} does not exist")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def load_run_config(config_path: Path) -> Any:
    """The TrainerConfig saved in a run's config.yml (read by the typed allow-list loader)."""
    from nerf_inr_methods.nerfstudio_plugin.config_loader import load_run_config as load_safely

    return load_safely(config_path)


def flatten_config(obj: Any, prefix: str = "") -> Dict[str, str]:
    """Dotted path -> printable value of every leaf of a (nested dataclass / dict) config."""
    out: Dict[str, str] = {}
    if is_dataclass(obj) and not isinstance(obj, type):
        for f in fields(obj):
            out.update(flatten_config(getattr(obj, f.name), f"{prefix}{f.name}."))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
    else:
        if isinstance(obj, type):
            value = f"{obj.__module__}.{obj.__qualname__}"
        elif isinstance(obj, Path):
            value = str(obj)
        elif isinstance(obj, torch.Tensor):
            value = repr(obj.tolist())
        else:
            value = repr(obj)
        out[prefix[:-1]] = value
    return out


def _ignored(key: str, extra: Sequence[str]) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    is_seed = leaf == "seed" or leaf.endswith("_seed")  # e.g. ESGD's rademacher_seed: a seed, not a setting
    return (
        is_seed
        or key in IGNORED_KEYS
        or key.startswith(IGNORED_PREFIXES)
        or any(key == e or key.startswith(e) for e in extra)
    )


def _short_key(key: str) -> str:
    """A config path as a label: ``pipeline.model.iga`` -> ``iga``, ``pipeline.int_enabled`` -> ``int_enabled``."""
    for prefix in ("pipeline.model.", "pipeline."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def group_labels(configs: Sequence[Any], ignore: Sequence[str] = ()) -> List[str]:
    """One group label per run: ``method_name`` + ``key=value`` for the config values that differ between runs
    of the same method (seeds, timestamps, paths, logging and the keys/prefixes in ``ignore`` excluded; keys under
    ``pipeline.model.`` / ``pipeline.`` shown without that prefix)."""
    flat = [flatten_config(c) for c in configs]
    labels = []
    for i, config in enumerate(configs):
        same_method = [j for j, c in enumerate(configs) if c.method_name == config.method_name]
        keys = sorted({k for j in same_method for k in flat[j]})
        varying = [
            k for k in keys if not _ignored(k, ignore) and len({flat[j].get(k, "<absent>") for j in same_method}) > 1
        ]
        parts = [f"{_short_key(k)}={flat[i].get(k, '<absent>')}" for k in varying]
        labels.append(config.method_name + (f" ({', '.join(parts)})" if parts else ""))
    return labels
