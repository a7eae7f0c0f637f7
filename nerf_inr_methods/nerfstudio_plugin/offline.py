"""LPIPS offline, one-line bad input, and nerfstudio's ``eval_setup`` with safe loading.

The process-wide changes below are listed, and installed, by :mod:`patches` (:func:`install` here is its alias):

- LPIPS becomes lazy. nerfstudio models build torchmetrics' LPIPS in ``populate_modules``, which downloads the
  AlexNet backbone (``alexnet-owt-7be5be79.pth``) and crashes with no network. :class:`LazyLPIPS` builds the
  real metric on first use; if the weights cannot be had it warns once and the metric is omitted from the
  evaluation results (never a made-up value). Provide the weights once, on any machine with internet::

      python -c "import torchvision; torchvision.models.alexnet(weights='DEFAULT')"

  and copy ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` (default ``~/.cache/torch``) to the
  same place on the offline machine. Set ``NIM_LPIPS=off`` to skip LPIPS without trying.
- Bad input reaches the user as one line. ``ns-train`` lets every exception out as a traceback (after the config
  dump); :func:`install_bad_input_hook` makes ``sys.excepthook`` print a ``ValueError`` / ``FileNotFoundError``
  *raised by this package* (our checks name the flag or file: ``preflight``, dataparsers, configs) as
  ``<program>: error: <message>`` and exit with status 2. Every other exception, including a ValueError raised
  inside nerfstudio or torch, keeps its traceback; ``NIM_TRACEBACK=1`` shows the traceback of ours too.

:func:`safe_eval_setup` is nerfstudio's ``eval_setup`` with the config and checkpoint loaded safely and one clear error
per bad input; :func:`load_run` is it on a run folder that may have moved since training (``inr-mesh``, the demo).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from nerf_inr_methods import safe_io
from nerf_inr_methods.nerfstudio_plugin import config_loader

LPIPS_MISSING_NOTE = (
    "LPIPS omitted: its AlexNet weights (alexnet-owt-7be5be79.pth) are not available offline. "
    "See nerf_inr_methods/nerfstudio_plugin/offline.py or the README to provide them."
)
_lpips_warned = False
_real_lpips: list = []  # torchmetrics' class, saved before install() replaces it


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the AlexNet weights LPIPS needs."""
    return Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"


def _real_lpips_class() -> type:
    if not _real_lpips:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        _real_lpips.append(LearnedPerceptualImagePatchSimilarity)
    return _real_lpips[0]


def _warn_lpips_missing(reason: str) -> None:
    global _lpips_warned
    if not _lpips_warned:
        _lpips_warned = True
        warnings.warn(f"{LPIPS_MISSING_NOTE} ({reason})", stacklevel=3)


class LazyLPIPS(nn.Module):
    """Drop-in for torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` that builds it on first call.

    Returns the LPIPS value (a 0-dim tensor), or a NaN tensor when the backbone weights cannot be loaded;
    NaN results are dropped from nerfstudio's evaluation output by :func:`drop_unavailable_metrics`.
    The real metric is kept outside the module tree, so checkpoints never contain (or require) its weights.
    """

    def __init__(self, net_type: str = "alex", reduction: str = "mean", normalize: bool = False, **kwargs: Any):
        super().__init__()
        self._kwargs = dict(net_type=net_type, reduction=reduction, normalize=normalize, **kwargs)
        self._metric: list = []  # [metric] once built; a list keeps it out of state_dict and .to()
        self._unavailable = os.environ.get("NIM_LPIPS", "").lower() in ("off", "0", "false")

    def is_available(self) -> bool:
        """Build the metric if needed (may download its weights); False when it cannot be had.

        A method, not a property: nerfstudio's viewer reads every property of the model's modules at start.
        """
        return self._build() is not None

    def _build(self) -> nn.Module | None:
        if self._metric:
            return self._metric[0]
        if self._unavailable:
            _warn_lpips_missing("NIM_LPIPS=off")
            return None
        try:
            metric = _real_lpips_class()(**self._kwargs)
        except Exception as error:  # download failures come as URLError, OSError, RuntimeError...
            self._unavailable = True
            _warn_lpips_missing(f"{type(error).__name__}: {error}"[:200])
            return None
        self._metric.append(metric)
        return metric

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        metric = self._build()
        if metric is None:
            return torch.tensor(math.nan, device=preds.device)
        metric = metric.to(preds.device)
        return metric(preds, target)


def drop_unavailable_metrics(metrics: dict) -> dict:
    """Remove LPIPS entries whose value is NaN (LPIPS unavailable) from a metrics dict, in place."""
    for key in [k for k in metrics if "lpips" in k]:
        value = metrics[key]
        if isinstance(value, (float, Tensor)) and math.isnan(float(value)):
            del metrics[key]
    return metrics


BAD_INPUT_EXIT_STATUS = 2
"""Exit status of a command stopped by bad input (as argparse, tyro and our console scripts)."""


def raised_by_this_package(error: BaseException) -> bool:
    """Whether the innermost traceback frame of a raised ``error`` is in this package (one of our ``raise`` lines)."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    module = str(traceback.tb_frame.f_globals.get("__name__", ""))
    return module.split(".")[0] == "nerf_inr_methods"


def bad_input_message(error: BaseException) -> str | None:
    """The message of a bad-input error our code raised, or None for any other exception (a bug: keep its traceback).

    Bad input is a ``ValueError`` or ``FileNotFoundError`` whose innermost traceback frame is in this package, i.e.
    one of our own ``raise`` statements (they name the flag or file and what was expected).
    """
    if not isinstance(error, (ValueError, FileNotFoundError)) or not raised_by_this_package(error):
        return None
    return " ".join(str(error).split()) or type(error).__name__


def install_bad_input_hook() -> None:
    """Make uncaught bad input (:func:`bad_input_message`) print ``<program>: error: <message>`` on stderr and exit
    with status 2; other exceptions go to the previous ``sys.excepthook`` unchanged (idempotent)."""
    previous = sys.excepthook
    if getattr(previous, "_nerf_inr_methods_hook", False):
        return

    def excepthook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        message = bad_input_message(error)
        if message is None or os.environ.get("NIM_TRACEBACK", "") not in ("", "0"):
            previous(kind, error, traceback)
            return
        program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "error"
        sys.stdout.flush()
        print(f"{program}: error: {message}", file=sys.stderr, flush=True)
        # os._exit: an excepthook cannot choose the status otherwise, and a viewer or loader thread must not keep
        # the process alive; nothing of the run needs saving at this point.
        os._exit(BAD_INPUT_EXIT_STATUS)

    excepthook._nerf_inr_methods_hook = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook


def install_lazy_lpips() -> None:
    """torchmetrics' LPIPS becomes :class:`LazyLPIPS`; ``VanillaPipeline``'s two eval-metric methods drop an
    unavailable LPIPS from their results (:func:`drop_unavailable_metrics`). Idempotent."""
    import torchmetrics.image.lpip as lpip_module
    from nerfstudio.pipelines.base_pipeline import VanillaPipeline

    if lpip_module.LearnedPerceptualImagePatchSimilarity is LazyLPIPS:
        return
    _real_lpips_class()
    lpip_module.LearnedPerceptualImagePatchSimilarity = LazyLPIPS  # type: ignore[misc]

    original_average = VanillaPipeline.get_average_eval_image_metrics
    original_single = VanillaPipeline.get_eval_image_metrics_and_images

    def get_average_eval_image_metrics(self, *args: Any, **kwargs: Any):
        return drop_unavailable_metrics(original_average(self, *args, **kwargs))

    def get_eval_image_metrics_and_images(self, *args: Any, **kwargs: Any):
        metrics, images = original_single(self, *args, **kwargs)
        return drop_unavailable_metrics(metrics), images

    VanillaPipeline.get_average_eval_image_metrics = get_average_eval_image_metrics  # type: ignore[method-assign]
    VanillaPipeline.get_eval_image_metrics_and_images = get_eval_image_metrics_and_images  # type: ignore


def install() -> None:
    """Install what the package changes in nerfstudio (:func:`patches.install`; idempotent). Called when nerfstudio
    loads our method configs through the entry points."""
    from nerf_inr_methods.nerfstudio_plugin import patches

    patches.install()


def latest_checkpoint(checkpoint_dir: Path, source: str) -> tuple[Path, int]:
    """The newest ``step-XXXXXXXXX.ckpt`` of a run's checkpoint folder and its step.

    Raises:
        FileNotFoundError: no folder or no checkpoint in it (``source`` names the config that points there).
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"{source}: its checkpoint folder {checkpoint_dir} does not exist")
    steps = []
    for path in checkpoint_dir.glob("step-*.ckpt"):
        digits = path.stem.split("-", 1)[1]
        if digits.isdigit():
            steps.append((int(digits), path))
    if not steps:
        raise FileNotFoundError(f"{source}: no checkpoint (step-*.ckpt) in {checkpoint_dir}")
    step, path = max(steps)
    return path, step


def safe_eval_setup(
    config_path: Path,
    eval_num_rays_per_chunk: int | None = None,
    test_mode: str = "test",
    update_config_callback: Any = None,
) -> tuple[Any, Any, Path, int]:
    """nerfstudio's ``eval_setup`` with safe loading and one clear error per bad input, checked before the long part.

    The config is read with :func:`config_loader.load_run_config` (allow-listed classes only) and the
    newest checkpoint with :func:`nerf_inr_methods.safe_io.safe_torch_load` (plain weights only; a truncated file is
    named), both before the pipeline (and its dataset) is set up.

    Returns:
        (config, pipeline in eval mode, checkpoint path, step), as ``eval_setup``.

    Raises:
        FileNotFoundError / ValueError naming the config, the method or the checkpoint.
    """
    install()
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.pipelines.base_pipeline import Pipeline

    config_path = Path(config_path)
    config = config_loader.load_run_config(config_path)
    if config.method_name not in all_methods:
        raise ValueError(
            f"{config_path}: method {config.method_name!r} is not installed here "
            f"(known: {', '.join(sorted(all_methods))})"
        )
    config.pipeline.datamanager._target = all_methods[config.method_name].pipeline.datamanager._target
    if eval_num_rays_per_chunk:
        config.pipeline.model.eval_num_rays_per_chunk = eval_num_rays_per_chunk
    if update_config_callback is not None:
        config = update_config_callback(config)
    config.load_dir = config.get_checkpoint_dir()
    checkpoint_path, step = latest_checkpoint(config.load_dir, str(config_path))
    state = safe_io.safe_torch_load(checkpoint_path, map_location="cpu")
    if not isinstance(state, dict) or "pipeline" not in state:
        raise ValueError(f"checkpoint {checkpoint_path} is not a nerfstudio checkpoint (no 'pipeline' entry)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipeline = config.pipeline.setup(device=device, test_mode=test_mode)
    assert isinstance(pipeline, Pipeline)
    pipeline.eval()
    try:
        pipeline.load_pipeline(state["pipeline"], state.get("step", step))
    except (RuntimeError, KeyError) as error:  # shapes or keys of another model
        raise ValueError(
            f"checkpoint {checkpoint_path} does not fit the model of {config_path} "
            f"({' '.join(str(error).split())[:200]})"
        ) from None
    return config, pipeline, checkpoint_path, int(state.get("step", step))


def relocate(run_dir: Path):
    """``eval_setup`` callback loading checkpoints from ``run_dir`` even if the run folder moved since training."""

    def callback(config: Any) -> Any:
        config.relative_model_dir = (Path(run_dir) / config.relative_model_dir).resolve()  # absolute: wins in "/"
        datamanager = config.pipeline.datamanager
        data = getattr(datamanager, "data", None) or getattr(getattr(datamanager, "dataparser", None), "data", None)
        if data is not None and not Path(data).exists():
            raise FileNotFoundError(
                f"{Path(run_dir) / 'config.yml'}: its dataset {data} does not exist (the scene box and the "
                "dataparser transform come from it); run from the directory training ran in"
            )
        return config

    return callback


class LoadedRun(NamedTuple):
    """A trained run loaded by :func:`load_run`: as ``eval_setup`` returns it, plus the run folder."""

    config: Any
    pipeline: Any
    checkpoint: Path
    step: int
    run_dir: Path
    """The folder holding the run's config.yml now (its checkpoints are read from there)."""


def load_run(load_config: Path, test_mode: str = "test") -> LoadedRun:
    """:func:`safe_eval_setup` of a run's config.yml, reading the checkpoints from the folder that holds it now
    (:func:`relocate`: the run folder may have moved since training)."""
    run_dir = Path(load_config).resolve().parent
    loaded = safe_eval_setup(Path(load_config), test_mode=test_mode, update_config_callback=relocate(run_dir))
    return LoadedRun(*loaded, run_dir)
