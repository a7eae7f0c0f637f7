"""``inr-compare`` (:mod:`.cli`): evaluate nerfstudio runs on the same test views; tabulate, plot and judge them.

Modules, in the order a comparison uses them:

- :mod:`.discover`: run folders -> ``config.yml`` -> TrainerConfig -> group label (method + differing settings);
- :mod:`.logs`: the run's tensorboard log -> training seconds, rays/s, logged PSNR curve;
- :mod:`.evaluation`: checkpoint -> metrics on the chosen test views, as ``ns-eval`` computes them;
- :mod:`.report`: statistics and verdicts per group (:mod:`nerf_inr_methods.reporting`), Markdown, figures;
- :mod:`.cli`: :class:`Compare`, the command line tying them together.
"""

from nerf_inr_methods.nerfstudio_plugin.compare.cli import Compare, entrypoint
from nerf_inr_methods.nerfstudio_plugin.compare.discover import find_run_configs, group_labels, load_run_config
from nerf_inr_methods.nerfstudio_plugin.compare.evaluation import RunEvaluation, evaluate_run
from nerf_inr_methods.nerfstudio_plugin.compare.logs import TrainingLog, read_training_log

__all__ = [
    "Compare",
    "RunEvaluation",
    "TrainingLog",
    "entrypoint",
    "evaluate_run",
    "find_run_configs",
    "group_labels",
    "load_run_config",
    "read_training_log",
]
