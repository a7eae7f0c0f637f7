"""Every NeRF method against vanilla NeRF at vanilla's plateau, on CPU (converged comparison).

Each run trains one arm (a registered method or inr-nerf's switches, CPU preset) through nerfstudio's own Trainer
(its callbacks and ``train_iteration``, so our pipelines, models and trainers behave as under ``ns-train``) with the
shared plateau schedule (:data:`SCHEDULE`), and logs test PSNR on fixed views every ``eval_every`` steps against
steps, training wall-clock and training CPU time (evaluation and checkpointing excluded). A run is a real nerfstudio
run folder (``config.yml`` + checkpoint), so ``ns-eval``, ``ns-render`` and ``inr-mesh`` work on it.

Resumable at two levels: a finished run (``run.json`` with ``finished``) is reused when its settings match, and an
unfinished one continues from its last checkpoint (saved at every evaluation), so the study can be split across
sessions; every run records the commit it was trained at (each segment's commit if it was resumed). On a machine
without the run folders (a fresh checkout), the finished runs and lr grids recorded in the results file (``--results``)
stand in for them: they are reported, not trained again; their meshes and pictures are kept as drawn before.

Stages (``--stage``): ``tune`` trains each arm's lr grid for ``tune_steps`` steps of the plateau schedule (its first
``tune_steps`` steps, same lr curve) and picks the best lr on every 20th val view; ``train`` trains every
(scene, arm, seed) at its tuned lr (or the arm's default when no tuning exists yet); ``report`` writes
``benchmarks/results/nerf_plateau.json`` (every raw curve), the Markdown table, the PSNR-vs-time plot and the
side-by-side test views. ``all`` does the three in order.

Run from the repository root: ``python -m benchmarks.nerf_plateau --help``. ``--quick`` is a 2-minute smoke on the
generated synthetic scene, writing outside tracked files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Literal, Sequence, Tuple

import numpy as np
import tyro

from benchmarks.common import RESULTS_DIR
from nerf_inr_methods import reporting
from nerf_inr_methods.nerfstudio_plugin.presets import CPU_PRESET
from nerf_inr_methods.reporting import fmt_pm, mean_std, plateau_gain, plateau_start, time_to_target

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SCENES: Dict[str, Dict[str, Any]] = {
    "mic": {
        "data": SHARED / "blender" / "mic",
        "parser": "blender",
        "overrides": {"pipeline.datamanager.camera_res_scale_factor": 0.5},  # 200 px files -> 100 px
        "view_every": 20,
    },
    "fern": {
        "data": SHARED / "llff" / "fern",
        "parser": "llff",
        # images_8 (504 x 378) at half size, 252 x 189 px, as llff_fern.py: mic's 100 px are half its files too,
        # and each logged evaluation renders the 3 hold-out views whole
        "overrides": {
            "pipeline.model.background_color": "last_sample",
            "pipeline.datamanager.camera_res_scale_factor": 0.5,
        },
        "view_every": 1,
    },
    "synthetic": {
        "data": ROOT / "data" / "synthetic-demo",
        "parser": "blender",
        "overrides": {},
        "view_every": 1,
    },
}
"""scene -> data folder, dataparser, config overrides, and the stride of the fixed evaluation views."""

SCHEDULE: Dict[str, Any] = {"steps": 18750, "hold": 0.48, "decay_end": 0.8, "lr_final_ratio": 0.1, "rays": 256}
"""The shared plateau schedule (chosen by the pilots in the README): steps; constant lr for the first ``hold``
fraction of them (9000 steps), then exponential decay to ``lr * lr_final_ratio`` at the ``decay_end`` fraction
(15000 steps), then constant ``lr * lr_final_ratio`` for the last 20%, where the plateau rule is checked
(nerfstudio's ExponentialDecayScheduler, its warm-up held at the lr); rays per step. Decaying from step 0 slows
the climb (pilots: -2.4 and -4.4 dB at 8000 steps against constant lr), constant lr stalls at ~30 dB, and a decay
that ends at the last step still climbs over the last 20% (+0.8 dB on mic)."""

DEFAULT_SAMPLES: Tuple[int, int] = (
    CPU_PRESET["pipeline.model.num_coarse_samples"],
    CPU_PRESET["pipeline.model.num_importance_samples"],
)
"""Coarse and importance samples per ray of the CPU preset (the study's default)."""

_INT = {"pipeline.int_enabled": True}
_ESGD = "optimizer_presets.esgd.optimizer"
_RECIPE = f"{_ESGD}.recipe"
_FULL_BATCH_FROM_4 = {"pipeline.int_ratio_kind": "constant", "pipeline.int_r0": 1.0, "pipeline.int_pool_batches": 4}
"""Soft mining's set-up: every step trains a full batch of B rays, drawn by error from a pool of 4 B candidates."""
_SCORE_EVERY_4 = {"pipeline.int_interval_kind": "constant", "pipeline.int_max_interval": 4}
"""The pool is replaced and scored every 4 steps (256 rays scored per step, about a third of a training step), with
draws from its stale scores in between: int-soft scored 1024 rays every step for its first 3750 steps (incremental
interval), 2.8x vanilla's CPU time per step."""
_IGA = {"pipeline.model.iga": True, "pipeline.model.iga_end": 6}  # 25 of 1024 rays, scaled to 256 -> 6


@dataclass(frozen=True)
class Arm:
    """One arm of the study: a registered method with config overrides, its optimizer family and lr grid."""

    method: str
    overrides: Dict[str, Any] = field(default_factory=dict)
    optimizer: Literal["configured", "esgd", "adam"] = "configured"
    """Which optimizer's lr the grid sets: the method's RAdam ("configured"), or gauss-nerf's esgd / adam preset."""
    lr_grid: Tuple[float, ...] = (5e-4, 1e-3, 2e-3, 4e-3)
    """RAdam arms: x2 spacing around the preset's 1e-3 (4e-3 added when vanilla and the error map both won at 2e-3)."""
    default_lr: float = 1e-3
    lr_from: str | None = None
    """Ablations: train at this arm's tuned lr (no tuning runs of their own)."""
    lr_scale: float = 1.0
    """With lr_from: train at that arm's tuned lr times this (a check of the short tuning horizon)."""
    steps_scale: float = 1.0
    """Train on this fraction of the shared schedule's steps, with the same shape (hold, decay end and final lr at
    the same fractions): does the arm reach vanilla's final PSNR on a shorter schedule?"""
    preset: str | None = "cpu"
    """The preset of ``presets.py`` the arm trains with (e.g. nerfacto's ``nerfacto-cpu``; None: the method's own
    sizes)."""
    param_groups: Tuple[str, ...] = ("fields",)
    """The ``--optimizers`` groups the arm's lr and the plateau schedule apply to ("configured" optimizer; nerfacto:
    its proposal networks and field)."""
    scene_overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    """scene -> config overrides of this arm on that scene (e.g. nerfacto's Blender set-up), after the scene's own."""


ARMS: Dict[str, Arm] = {
    "vanilla": Arm("inr-nerf"),
    # the uniform control at the shorter schedule of int-error-map-0.7T: what the shorter schedule alone costs
    "vanilla-0.7T": Arm("inr-nerf", lr_from="vanilla", steps_scale=0.7),
    "iga": Arm("iga-nerf", dict(_IGA)),
    "iga-identity": Arm("iga-nerf", {**_IGA, "pipeline.model.iga_identity": True}),
    "int": Arm("int-nerf"),
    "int-random": Arm("int-nerf", {"pipeline.int_random_subset": True}),
    "int+iga": Arm("inr-nerf", {**_INT, **_IGA}),
    "int-soft": Arm("inr-nerf", {**_INT, **_FULL_BATCH_FROM_4, "pipeline.int_sampler": "soft"}),
    "int-soft-every4": Arm(
        "inr-nerf", {**_INT, **_FULL_BATCH_FROM_4, **_SCORE_EVERY_4, "pipeline.int_sampler": "soft"}
    ),
    "int-error-map": Arm("inr-nerf", {**_INT, **_FULL_BATCH_FROM_4, "pipeline.int_sampler": "error-map"}),
    # the error map on 70% of the schedule's steps: issue 16's time target (vanilla's final in <= 0.7x the time)
    "int-error-map-0.7T": Arm(
        "inr-nerf",
        {**_INT, **_FULL_BATCH_FROM_4, "pipeline.int_sampler": "error-map"},
        lr_from="int-error-map",
        steps_scale=0.7,
    ),
    # the error map with alpha = 1 (after the warm-up): importance-weighted, so the expected gradient is uniform
    # sampling's (on fern the default alpha 0.6 under-trained smooth regions: -0.3 to -0.6 dB there at the plateau)
    "int-error-map-unbiased": Arm(
        "inr-nerf",
        {**_INT, **_FULL_BATCH_FROM_4, "pipeline.int_sampler": "error-map", "pipeline.int_alpha": 1.0},
        lr_from="int-error-map",
    ),
    # the error map drawing by sqrt(error) (error_power 0.5): a flatter distribution over regions that are learnt but
    # not solved (fern's smooth fifths have ~4x less L1 error than its leaves, not ~0 as mic's background)
    "int-error-map-sqrt": Arm(
        "inr-nerf",
        {**_INT, **_FULL_BATCH_FROM_4, "pipeline.int_sampler": "error-map", "pipeline.int_error_power": 0.5},
        lr_from="int-error-map",
    ),
    "int-two-forward": Arm(
        "inr-nerf",
        {**_INT, "pipeline.int_sampler": "two-forward", "pipeline.int_ratio_kind": "constant", "pipeline.int_r0": 0.5},
    ),
    "gauss-adam": Arm("gauss-nerf", {"optimizer": "adam"}, "adam", (1.5e-3, 4.5e-3, 1.35e-2), 4.5e-3),
    # Adam's tuned lr (4.5e-3, best on val at 2000 steps) degrades while held: its grid's next lr, to the plateau
    "gauss-adam-lr-third": Arm("gauss-nerf", {"optimizer": "adam"}, "adam", lr_from="gauss-adam", lr_scale=1.0 / 3),
    "gauss-esgd": Arm("gauss-nerf", {_RECIPE: "official"}, "esgd", (1.0 / 9, 1.0 / 3, 1.0), 1.0 / 3),
    "gauss-esgd-robust": Arm("gauss-nerf", {_RECIPE: "robust"}, "esgd", (3.0, 10.0, 30.0), 10.0),
    **{
        f"gauss-esgd-robust-{name}": Arm(
            "gauss-nerf", {_RECIPE: "robust", f"{_ESGD}.{option}": value}, "esgd", lr_from="gauss-esgd-robust"
        )
        for name, option, value in (
            ("1draw", "init_draws", 1),
            ("no-warmup", "lr_warmup", 0.0),
            ("mean", "d_statistic", "mean"),
            ("no-bound", "update_bound", 0.0),
        )
    },
}
"""arm -> how to train it. New arms are named with these prefixes (e.g. ``int-soft``, ``gauss-esgd-robust``). The
``gauss-esgd-robust-*`` ablations each set one option of the robust recipe back to the official value, at the robust
arm's tuned lr. Other studies add their arms with :func:`register_arms` (e.g. ``benchmarks.nerfacto_plateau``)."""

ARM_MODULES: List[str] = []
"""Modules that added arms with :func:`register_arms`: every training process imports them first."""


def register_arms(arms: Dict[str, Arm], module: str) -> None:
    """Add another study's ``arms`` to :data:`ARMS`; ``module`` (which calls this at import) is imported by every
    training process (:func:`train_all` trains in fresh processes), so the arms are known there too."""
    clashes = [name for name in arms if name in ARMS and ARMS[name] != arms[name]]
    if clashes:
        raise ValueError(f"arms {clashes} are defined already, differently")
    ARMS.update(arms)
    if module not in ARM_MODULES:
        ARM_MODULES.append(module)


def _import_arm_modules(modules: Tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


@dataclass
class PlateauConfig:
    """Converged comparison of every NeRF method against vanilla NeRF (CPU preset)."""

    stage: Literal["tune", "train", "report", "all"] = "all"
    """tune: lr grids at a short horizon; train: the plateau runs; report: JSON, table and pictures; all: in order."""
    scenes: Tuple[str, ...] = ("mic",)
    """Scenes to train (mic, fern, synthetic)."""
    arms: Tuple[str, ...] = tuple(ARMS)
    """Arms to train and report (the baseline is always included)."""
    baseline: str = "vanilla"
    """The arm every other arm is compared with (results keys say ``vanilla`` for it, whichever arm it is)."""
    seeds: Tuple[int, ...] = (0, 1)
    """Paired seeds on the ``paired_scenes``; the other scenes use the first seed only."""
    paired_scenes: Tuple[str, ...] = ("mic",)
    """Scenes trained and reported on every seed of ``--seeds`` (the study's design: mic; e.g. ``--paired-scenes
    mic fern`` adds fern's second seed, to tell a one-seed difference there from seed noise)."""
    steps: int = SCHEDULE["steps"]
    """Training steps per run (the shared plateau schedule)."""
    hold: float = SCHEDULE["hold"]
    """Fraction of the steps at constant lr before the decay starts."""
    decay_end: float = SCHEDULE["decay_end"]
    """Fraction of the steps at which the decay reaches lr * lr_final_ratio (constant from there on)."""
    lr_final_ratio: float = SCHEDULE["lr_final_ratio"]
    """Exponential lr decay to lr * this at the last step (1 = constant lr)."""
    rays: int = SCHEDULE["rays"]
    """Rays per training step (the datamanager's batch)."""
    samples: Tuple[int, int] = DEFAULT_SAMPLES
    """Coarse and importance samples per ray of every arm (gauss-nerf: its stratified samples and an unused
    importance count), e.g. ``--samples 16 16``: half the CPU preset's points per ray."""
    eval_every: int = 1000
    """Steps between logged test evaluations (and checkpoints)."""
    tune_steps: int = 2000
    """Horizon of the lr tuning runs (the first steps of the plateau schedule)."""
    tune_scene: str = "mic"
    """Scene the lr grids are tuned on (val split)."""
    jobs: int = 2
    """Runs trained at once, each in its own process."""
    threads: int = 1
    """Torch threads per run."""
    output_dir: Path = ROOT / "outputs" / "nerf_plateau"
    """Run folders (reused across invocations: this is what makes the study resumable)."""
    results: Path = RESULTS_DIR / "nerf_plateau.json"
    """Results JSON (every run's raw curve)."""
    synthetic_data: Path = SCENES["synthetic"]["data"]
    """Folder of the generated synthetic scene (made by data_scripts/make_synthetic_scene.py when absent)."""
    meshes: bool = True
    """report: inr-mesh with its default settings on every finished run, and the meshes of vanilla and the best
    arm drawn beside the ground-truth views."""
    lrs: Dict[str, float] = field(default_factory=dict)
    """train / report: these arms at these lrs instead of their tuned (or default) ones, e.g. ``--lrs vanilla 0.002
    int-error-map 0.002`` for a comparison at another shared lr (use its own --output-dir)."""
    plateau_reference: Path | None = RESULTS_DIR / "nerf_plateau_long_tail.json"
    """report: a results file whose finished vanilla runs were trained longer than ``steps``, to vanilla's plateau
    (the long-tail study), as a second reference: each arm's final PSNR against that vanilla's final and its steps
    to reach it, paired by scene and seed at vanilla's lr and rays (none when ``None``, missing, or ``--results``)."""
    until: int | None = None
    """train: stop every run, unfinished, at its first evaluation (= checkpoint) step at or after this step (a later
    call without it continues each run to the end)."""
    quick: bool = False
    """Smoke run: synthetic scene, 200 steps, 2 arms, writing below output_dir only."""


# ------------------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run; its hash names the run folder's settings."""

    scene: str
    arm: str
    seed: int
    lr: float
    steps: int
    lr_final_ratio: float
    rays: int
    eval_every: int
    hold: float = 0.0
    """Fraction of the steps at constant lr before the exponential decay (0: decay from the first step)."""
    decay_end: float = 1.0
    """Fraction of the steps at which the decay ends (1: at the last step)."""
    split: str = "test"
    """Split of the logged evaluations (val for tuning runs)."""
    stop: int | None = None
    """Stop after this many steps of the ``steps``-long schedule (tuning runs: the schedule's first steps)."""
    data: str = ""
    """Data folder of the scene when not the default one of :data:`SCENES` (e.g. a generated scene in tests)."""
    samples: Tuple[int, int] = DEFAULT_SAMPLES
    """Coarse and importance samples per ray (the CPU preset's 32 + 32 by default)."""

    def __post_init__(self) -> None:  # a record read back from JSON holds a list
        object.__setattr__(self, "samples", tuple(self.samples))

    @property
    def name(self) -> str:
        kind = "tune-" if self.split == "val" else ""
        stop = f"-stop{self.stop}" if self.stop else ""
        samples = "-samples{}+{}".format(*self.samples) if self.samples != DEFAULT_SAMPLES else ""
        hold = f"-hold{self.hold:g}" if self.hold else ""
        hold += f"-end{self.decay_end:g}" if self.decay_end != 1.0 else ""
        return (
            f"{kind}{self.arm}-lr{self.lr:.3g}-seed{self.seed}-T{self.steps}{hold}-decay{self.lr_final_ratio:g}"
            f"-rays{self.rays}{samples}{stop}"
        )

    @property
    def last_step(self) -> int:
        return self.stop or self.steps

    def key(self) -> str:
        fields = dataclasses.asdict(self)
        if not fields["data"]:  # the scene's default folder (machines differ in where it lives)
            del fields["data"]
        if not fields["hold"]:  # keys of runs made before the hold existed
            del fields["hold"]
        if fields["decay_end"] == 1.0:  # ... and before the decay could end early
            del fields["decay_end"]
        if fields["samples"] == DEFAULT_SAMPLES:  # ... and before the samples per ray could change
            del fields["samples"]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def trainer_config(spec: RunSpec, run_dir: Path):
    """The nerfstudio TrainerConfig of one run: the arm's method and overrides, CPU preset, the plateau schedule."""
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    arm, scene = ARMS[spec.arm], SCENES[spec.scene]
    overrides = {
        **scene["overrides"],
        **arm.scene_overrides.get(spec.scene, {}),
        **arm.overrides,
        "pipeline.datamanager.train_num_rays_per_batch": spec.rays,
    }
    if spec.samples != DEFAULT_SAMPLES:
        coarse, importance = spec.samples
        overrides["pipeline.model.num_coarse_samples"] = coarse
        overrides["pipeline.model.num_importance_samples"] = importance
    if scene["parser"] == "llff":
        from nerf_inr_methods.nerfstudio_plugin.llff_dataparser import LLFFDataParserConfig

        overrides["pipeline.datamanager.dataparser"] = LLFFDataParserConfig(downscale_factor=8, scale_factor=0.25)
    elif arm.preset != "cpu":  # a method whose default dataparser is not Blender's (nerfacto's: nerfstudio-data)
        from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

        overrides["pipeline.datamanager.dataparser"] = BlenderDataParserConfig()
    config = prepare_config(
        arm.method,
        Path(spec.data) if spec.data else scene["data"],
        run_dir.parents[2],
        steps=spec.steps,
        preset=arm.preset,
        seed=spec.seed,
        timestamp=run_dir.name,
        experiment_name=spec.scene,
        overrides=overrides,
    )
    assert config.get_base_dir() == run_dir, (config.get_base_dir(), run_dir)
    if getattr(config.pipeline, "int_enabled", False):
        # INT's schedules span the run's T steps; left unset, T would be taken from the trainer as resumed step +
        # max_num_iterations, which a continued run would see as a different schedule (and refuse)
        config.pipeline.int_total_steps = spec.steps
    config.steps_per_save = spec.eval_every
    config.save_only_latest_checkpoint = True
    hold_steps, decay_steps = int(round(spec.hold * spec.steps)), int(round(spec.decay_end * spec.steps))
    schedule = dict(lr_final=spec.lr * spec.lr_final_ratio, max_steps=decay_steps, warmup_steps=hold_steps)
    if arm.optimizer == "configured":
        for group in arm.param_groups:
            config.optimizers[group]["optimizer"].lr = spec.lr
            config.optimizers[group]["scheduler"] = (
                ExponentialDecaySchedulerConfig(lr_pre_warmup=spec.lr, **schedule)
                if spec.lr_final_ratio != 1.0
                else None
            )
    else:
        preset = config.optimizer_presets[arm.optimizer]
        preset["optimizer"].lr = spec.lr
        preset["scheduler"] = dataclasses.replace(preset["scheduler"], lr_pre_warmup=spec.lr, **schedule)
        if arm.optimizer == "esgd":
            preset["optimizer"].rademacher_seed = spec.seed
    return config


def run_dir_of(spec: RunSpec, output_dir: Path) -> Path:
    """``output_dir/runs/<scene>/<method>/<run name>``: nerfstudio's experiment/method/timestamp layout."""
    return output_dir / "runs" / spec.scene / ARMS[spec.arm].method / spec.name


def load_record(spec: RunSpec, output_dir: Path) -> Dict[str, Any] | None:
    """The run's ``run.json`` if it exists and was made with the same settings (finished or not)."""
    path = run_dir_of(spec, output_dir) / "run.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("key") == spec.key() else None


def recorded_runs(results: Path) -> Dict[str, Dict[str, Any]]:
    """key -> finished run of the results file ``results`` (empty when it does not exist): the runs a machine
    without their folders (a fresh checkout) takes as done instead of training them again."""
    if not results.is_file():
        return {}
    return {r["key"]: r for r in json.loads(results.read_text()).get("runs", []) if r.get("finished")}


def finished_record(spec: RunSpec, config: PlateauConfig, recorded: Dict[str, Dict[str, Any]]) -> Dict[str, Any] | None:
    """The finished record of ``spec``: its run folder's, else that of ``recorded`` (:func:`recorded_runs` of
    ``config.results``), marked ``restored_from`` (its folder, checkpoint and renders are not on this machine, so it
    is reported but not meshed or drawn again)."""
    record = load_record(spec, config.output_dir)
    if record is not None and record.get("finished"):
        return record
    if record is None and spec.key() in recorded:
        return {**recorded[spec.key()], "restored_from": config.results.name}
    return None


def has_run_folder(record: Dict[str, Any]) -> bool:
    """Whether ``record``'s run folder (config, checkpoint, renders) is on this machine."""
    return "restored_from" not in record and bool(record.get("config")) and Path(record["config"]).is_file()


def lr_breaks(spec: RunSpec) -> Tuple[int, int]:
    """(last step of the held lr, step at which the decay reaches lr * lr_final_ratio) of ``spec``'s schedule."""
    return int(round(spec.hold * spec.steps)), int(round(spec.decay_end * spec.steps))


def plateau_check_note(spec: RunSpec) -> str:
    """One line under the report's tables: the steps the plateau rule compares on ``spec``'s logged curve and the lr
    the run trains at there.

    Protocol point 4: under a floor far below the lr, a flat tail is partly the schedule's, so the report says which
    floor the check was taken on. E.g. a 20000-step spec evaluated every 1000 steps, ``decay_end`` 0.6 and
    ``lr_final_ratio`` 0.01 names steps 16000 -> 20000 and the floor lr x 0.01 from step 12000."""
    evaluated = [*range(0, spec.steps, spec.eval_every), spec.steps]
    check_from = evaluated[plateau_start(evaluated)]
    note = f"Gain over the last 20%: test PSNR at step {spec.steps} minus at step {check_from}, trained "
    if spec.lr_final_ratio == 1.0:
        return note + "at a constant lr."
    return note + (
        f"with the lr at lr x {spec.lr_final_ratio:g} from step {lr_breaks(spec)[1]} on (protocol point 4: the "
        "lower that floor, the more of a flat tail is the schedule's, not the model's)."
    )


def prefix_spec(spec: RunSpec) -> RunSpec | None:
    """The run whose whole schedule is the first ``decay_end * steps`` steps of ``spec``'s (decay ending at its
    last step, same lr, hold steps and everything else), or None when ``spec``'s decay ends at its last step."""
    if spec.decay_end >= 1.0:
        return None
    steps = lr_breaks(spec)[1]
    return dataclasses.replace(spec, steps=steps, hold=lr_breaks(spec)[0] / steps, decay_end=1.0)


def schedules_agree(prefix: RunSpec, spec: RunSpec) -> bool:
    """Whether ``prefix`` (shorter) trains with ``spec``'s lr on every one of its steps, all else equal: the same
    held steps and the same step at which the decay ends (at or after the prefix's end)."""
    same = dataclasses.replace(prefix, steps=spec.steps, hold=spec.hold, decay_end=spec.decay_end) == spec
    return same and prefix.steps < spec.steps and lr_breaks(prefix) == lr_breaks(spec)


def find_prefix_run(spec: RunSpec, output_dir: Path) -> Tuple[RunSpec, Dict[str, Any]] | None:
    """The longest finished run next to ``spec``'s folder whose schedule agrees with ``spec``'s on all its steps."""
    found = []
    names = {f.name for f in dataclasses.fields(RunSpec)}
    for path in run_dir_of(spec, output_dir).parent.glob("*/run.json"):
        record = json.loads(path.read_text())
        candidate = RunSpec(**{k: v for k, v in record.items() if k in names})
        if record.get("finished") and record.get("key") == candidate.key() and schedules_agree(candidate, spec):
            found.append((candidate, record))
    return max(found, key=lambda item: item[0].steps, default=None)


def adopt_prefix_run(spec: RunSpec, output_dir: Path) -> Dict[str, Any] | None:
    """Start ``spec`` from the finished run of :func:`find_prefix_run` (its curve and last checkpoint): the lr
    schedules agree on every step of the prefix, so training on from its end is the run ``spec`` would have been
    (as a resume is). The adopted segments keep their commits; the new record says where it came from."""
    found = find_prefix_run(spec, output_dir)
    if found is None:
        return None
    prefix, old = found
    old_dir, new_dir = run_dir_of(prefix, output_dir), run_dir_of(spec, output_dir)
    checkpoint = old_dir / "nerfstudio_models" / f"step-{prefix.steps - 1:09d}.ckpt"
    if old["curve"][-1]["step"] != prefix.steps or not checkpoint.is_file():
        return None
    (new_dir / "nerfstudio_models").mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint, new_dir / "nerfstudio_models" / checkpoint.name)
    record = {k: v for k, v in old.items() if not k.startswith("final") and k not in ("config", "mesh")}
    record.update(dataclasses.asdict(spec), key=spec.key(), finished=False, adopted_from=prefix.name)
    reporting.write_json(record, new_dir / "run.json")
    return record


def train_run(spec: RunSpec, output_dir: Path, threads: int = 1, until: int | None = None) -> Dict[str, Any]:
    """Train (or continue) one run and return its record: meta, ``curve`` [{step, train_seconds, cpu_seconds, psnr}],
    final metrics. Evaluation (every ``eval_every`` steps on the scene's fixed views) and checkpointing are outside
    both clocks; every cost of a training step (INT scoring, eNTK, double backward) is inside. ``until``: stop
    at the first evaluation step at or after it, unfinished (as an interrupted session would; the next call continues
    from that checkpoint)."""
    import torch
    from nerfstudio.scripts.train import _set_random_seed

    from benchmarks.nerf_common import evaluate_views, load_eval_views, train_step
    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers

    torch.set_num_threads(threads)
    run_dir = run_dir_of(spec, output_dir)
    record = load_record(spec, output_dir) or adopt_prefix_run(spec, output_dir)
    if record is not None and (record.get("finished") or (until and record["curve"][-1]["step"] >= until)):
        return record
    run_dir.mkdir(parents=True, exist_ok=True)
    config = trainer_config(spec, run_dir)
    checkpoints = sorted((run_dir / "nerfstudio_models").glob("step-*.ckpt"))
    resume_step = None
    if record is not None and record["curve"] and checkpoints:
        last_step = record["curve"][-1]["step"]
        if (run_dir / "nerfstudio_models" / f"step-{last_step - 1:09d}.ckpt").is_file():
            resume_step = last_step
            config.load_dir = run_dir / "nerfstudio_models"
            config.load_step = last_step - 1
    commit = reporting.git_commit()
    if resume_step is None:
        record = {
            "key": spec.key(),
            **dataclasses.asdict(spec),
            "method": ARMS[spec.arm].method,
            "overrides": {k: repr(v) for k, v in ARMS[spec.arm].overrides.items()},
            "commit": commit,
            "segments": [],
            "curve": [],
            "finished": False,
        }
    record["segments"].append({"commit": commit, "start_step": resume_step or 0, "started": time.time()})
    with own_event_writers():
        _set_random_seed(spec.seed + (resume_step or 0))
        config.save_config()
        trainer = config.setup(local_rank=0, world_size=1)
        trainer.setup()
        pipeline = trainer.pipeline
        views = load_eval_views(pipeline, split=spec.split, every=SCENES[spec.scene]["view_every"])
        wall = record["curve"][-1]["train_seconds"] if resume_step else 0.0
        cpu = record["curve"][-1]["cpu_seconds"] if resume_step else 0.0
        rays_trained = record["curve"][-1]["rays_trained"] if resume_step else 0
        rays_scored = record["curve"][-1]["rays_scored"] if resume_step else 0
        if not resume_step:
            result = evaluate_views(pipeline, views)
            record["curve"].append(_point(0, 0.0, 0.0, 0, 0, result))
        for step in range(resume_step or 0, spec.last_step):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            metrics = train_step(trainer, step)
            wall += time.perf_counter() - wall_start
            cpu += time.process_time() - cpu_start
            rays_trained += int(metrics.get("rays_trained", pipeline.datamanager.get_train_rays_per_batch()))
            rays_scored += int(metrics.get("rays_scored", 0))
            done = step + 1
            if done % spec.eval_every == 0 or done == spec.last_step:
                result = evaluate_views(pipeline, views)
                record["curve"].append(_point(done, wall, cpu, rays_trained, rays_scored, result))
                trainer.save_checkpoint(step)
                record["segments"][-1]["end_step"] = done
                reporting.write_json(record, run_dir / "run.json")
                print(
                    f"  [{spec.name}] step {done}/{spec.last_step} {wall:7.0f} s  PSNR {result['psnr']:.2f}", flush=True
                )
                if until is not None and done >= until and done < spec.last_step:
                    return record
        final = final_metrics(pipeline, views, run_dir)
        if spec.split == "test":  # the val views too, for choices made on val (e.g. the shared schedule)
            val_views = load_eval_views(pipeline, split="val", every=SCENES[spec.scene]["view_every"])
            final["final_val_psnr"] = evaluate_views(pipeline, val_views)["psnr"]
    record.update(final)
    record["finished"] = True
    record["config"] = str(run_dir / "config.yml")
    reporting.write_json(record, run_dir / "run.json")
    return record


def _point(step: int, wall: float, cpu: float, trained: int, scored: int, result: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "step": step,
        "train_seconds": wall,
        "cpu_seconds": cpu,
        "rays_trained": trained,
        "rays_scored": scored,
        "psnr": result["psnr"],
        "psnr_per_view": result["psnr_per_view"],
    }


def final_metrics(pipeline, views, run_dir: Path) -> Dict[str, Any]:
    """PSNR and SSIM on the fixed views at the end of training; renders of the views saved as PNGs."""
    import imageio.v3 as iio
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn

    from benchmarks.nerf_common import psnr_db, render_view

    model = pipeline.model
    pipeline.eval()
    psnrs, ssims = [], []
    render_dir = run_dir / "renders"
    render_dir.mkdir(exist_ok=True)
    with torch.no_grad():
        for i in range(len(views.images)):
            prediction, target = render_view(model, views, i)
            prediction = prediction.clamp(0, 1)
            psnrs.append(psnr_db(prediction, target))
            nchw = lambda x: x.permute(2, 0, 1)[None]  # noqa: E731
            ssims.append(float(ssim_fn(nchw(prediction), nchw(target), data_range=1.0)))
            iio.imwrite(render_dir / f"{views.split}_{views.indices[i]:03d}.png", _to_uint8(prediction))
            if not (render_dir / f"{views.split}_{views.indices[i]:03d}_gt.png").exists():
                iio.imwrite(render_dir / f"{views.split}_{views.indices[i]:03d}_gt.png", _to_uint8(target))
    pipeline.train()
    return {"final_psnr": float(np.mean(psnrs)), "final_ssim": float(np.mean(ssims)), "final_psnr_per_view": psnrs}


def _to_uint8(image) -> np.ndarray:
    return (image.detach().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def _train_task(task: Tuple[RunSpec, str, int, int | None]) -> Dict[str, Any]:
    spec, output_dir, threads, until = task
    start = time.perf_counter()
    record = train_run(spec, Path(output_dir), threads, until)
    print(f"  [{spec.name}] done ({time.perf_counter() - start:.0f} s this call)", flush=True)
    return record


def train_all(specs: List[RunSpec], config: PlateauConfig) -> List[Dict[str, Any]]:
    """Train the specs not finished yet, ``jobs`` at a time, each in a fresh process (nerfstudio's writers and
    profiler are process-global); returns the records in the order of ``specs``."""
    recorded = recorded_runs(config.results)
    done = {s.key(): finished_record(s, config, recorded) for s in specs}
    todo = [s for s in specs if done[s.key()] is None]
    restored = sum("restored_from" in r for r in done.values() if r)
    print(
        f"{len(specs) - len(todo)} run(s) finished already ({restored} of them only in {config.results.name}), "
        f"{len(todo)} to train",
        flush=True,
    )
    tasks = [(s, str(config.output_dir), config.threads, config.until) for s in todo]
    if len(todo) == 1 or config.jobs == 1:  # in this process (nerfstudio's writers are closed after each run)
        for task in tasks:
            _train_task(task)
    elif todo:
        with ProcessPoolExecutor(
            config.jobs,
            mp_context=get_context("spawn"),
            max_tasks_per_child=1,
            initializer=_import_arm_modules,
            initargs=(tuple(ARM_MODULES),),
        ) as pool:
            list(pool.map(_train_task, tasks))
    return [finished_record(s, config, recorded) or load_record(s, config.output_dir) for s in specs]


# ------------------------------------------------------------------------------------------------------ stages
def tuned_arms(arms: Sequence[str]) -> List[str]:
    """The arms with lr grids of their own among ``arms``, in order: an ablation stands for the arm it takes its lr
    from (``Arm.lr_from``)."""
    return list(dict.fromkeys(ARMS[arm].lr_from or arm for arm in arms))


def tune_specs(config: PlateauConfig) -> List[RunSpec]:
    return [
        RunSpec(
            scene=config.tune_scene,
            arm=arm,
            seed=config.seeds[0],
            lr=lr,
            steps=config.steps,
            lr_final_ratio=config.lr_final_ratio,
            hold=config.hold,
            decay_end=config.decay_end,
            rays=config.rays,
            samples=config.samples,
            eval_every=config.tune_steps // 2,
            split="val",
            stop=config.tune_steps,
            data=scene_data(config, config.tune_scene),
        )
        for arm in tuned_arms(config.arms)
        for lr in ARMS[arm].lr_grid
    ]


def scene_data(config: PlateauConfig, scene: str) -> str:
    """The data folder to record in a RunSpec: empty for a scene's default folder."""
    if scene == "synthetic" and Path(config.synthetic_data) != SCENES["synthetic"]["data"]:
        return str(config.synthetic_data)
    return ""


def tuned_lrs(config: PlateauConfig) -> Dict[str, Dict[str, Any]]:
    """Per arm: the lr grid's val PSNR at ``tune_steps`` and the winner (arms without tuning runs: their default)."""
    out: Dict[str, Dict[str, Any]] = {}
    recorded = json.loads(config.results.read_text()).get("tuning", {}) if config.results.is_file() else {}
    for arm in tuned_arms(config.arms):
        scores = {}
        for spec in tune_specs(config):
            if spec.arm != arm:
                continue
            record = load_record(spec, config.output_dir)
            points = [p for p in (record or {}).get("curve", []) if p["step"] == config.tune_steps]
            if points:
                scores[spec.lr] = points[0]["psnr"]
        if not scores and recorded.get(arm, {}).get("grid"):  # tuned on another machine: its results file
            out[arm] = {**recorded[arm], "restored_from": config.results.name}
        elif len(scores) == len(ARMS[arm].lr_grid):
            best = max(scores, key=lambda lr: scores[lr])
            out[arm] = {"grid": scores, "lr": best, "at_grid_edge": best in (min(scores), max(scores))}
        else:
            out[arm] = {"grid": scores, "lr": ARMS[arm].default_lr, "untuned": True}
    for arm in config.arms:
        if ARMS[arm].lr_from:
            source = ARMS[arm].lr_from
            out[arm] = {"lr": out[source]["lr"] * ARMS[arm].lr_scale, "lr_from": source}
    return out


def plateau_specs(config: PlateauConfig) -> List[RunSpec]:
    lrs = tuned_lrs(config)
    specs = []
    for scene in config.scenes:
        seeds = config.seeds if scene in config.paired_scenes or config.quick else config.seeds[:1]
        for seed in seeds:
            for arm in config.arms:
                specs.append(
                    RunSpec(
                        scene=scene,
                        arm=arm,
                        seed=seed,
                        lr=config.lrs.get(arm, lrs[arm]["lr"]),
                        steps=int(round(config.steps * ARMS[arm].steps_scale)),
                        lr_final_ratio=config.lr_final_ratio,
                        hold=config.hold,
                        decay_end=config.decay_end,
                        rays=config.rays,
                        samples=config.samples,
                        eval_every=config.eval_every,
                        data=scene_data(config, scene),
                    )
                )
    return specs


def tune(config: PlateauConfig) -> None:
    """Train each arm's lr grid for ``tune_steps`` steps (the plateau schedule's first steps; val views), but for
    the grids recorded in the results file where their runs are not here."""
    restored = {arm for arm, tuning in tuned_lrs(config).items() if "restored_from" in tuning}
    train_all([spec for spec in tune_specs(config) if spec.arm not in restored], config)


PSNR_TOLERANCE_DB = 1e-6
"""A curve reaches a PSNR level within this: a run's final PSNR and its curve's last point are the same number
summed in another order (they differ in the last digit), and a run must reach its own final."""


def ratio_of_times(time: float | None, baseline: float | None) -> float | None:
    """``time / baseline``, or None when either never reached the level."""
    return time / baseline if time is not None and baseline else None


def time_to_psnr(times: np.ndarray, psnr: np.ndarray, target: float) -> float | None:
    """First clock value (interpolated) at which ``psnr`` reaches ``target`` (within :data:`PSNR_TOLERANCE_DB`)."""
    return time_to_target(times, psnr, target - PSNR_TOLERANCE_DB)


def curve_arrays(record: Dict[str, Any], clock: str = "train_seconds") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    curve = record["curve"]
    return (
        np.array([p["step"] for p in curve], dtype=float),
        np.array([p[clock] for p in curve], dtype=float),
        np.array([p["psnr"] for p in curve], dtype=float),
    )


def plateau_reference_runs(config: PlateauConfig) -> Dict[Tuple[str, int], Dict[str, Any]]:
    """(scene, seed) -> the longest finished vanilla run of ``config.plateau_reference`` trained longer than
    ``config.steps`` (empty when there is no such file or it is ``config.results``)."""
    path = config.plateau_reference
    if path is None or not Path(path).is_file() or Path(path).resolve() == Path(config.results).resolve():
        return {}
    longest: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for run in json.loads(Path(path).read_text()).get("runs", []):
        key = (run.get("scene"), run.get("seed"))
        if run.get("arm") == config.baseline and run.get("finished") and run.get("steps", 0) > config.steps:
            if key not in longest or run["steps"] > longest[key]["steps"]:
                longest[key] = run
    return longest


def versus_plateau(run: Dict[str, Any], base: Dict[str, Any], reference: Dict[str, Any] | None) -> Dict[str, Any]:
    """One run against vanilla's plateau run ``reference`` of its scene and seed (same lr and rays as the shared
    vanilla run ``base``): its final PSNR minus the reference's final, and its steps to that final over the
    reference's own (steps only: the reference ran in other sessions, under other loads and thread counts)."""
    if reference is None or (reference["lr"], reference["rays"]) != (base["lr"], base["rays"]):
        return {}
    target = reference["final_psnr"]
    r_steps, _, r_psnr = curve_arrays(reference)
    steps, _, psnr = curve_arrays(run)
    reached, reference_reached = time_to_psnr(steps, psnr, target), time_to_psnr(r_steps, r_psnr, target)
    return {
        "plateau_vanilla_steps": reference["steps"],
        "plateau_vanilla_final_psnr": target,
        "final_minus_plateau_vanilla": run["final_psnr"] - target,
        "steps_to_plateau_vanilla_final": reached,
        "steps_ratio_to_plateau_vanilla_final": ratio_of_times(reached, reference_reached),
    }


TEXTURE_BANDS = 5
"""psnr_by_texture: the views' pixels split into this many equal-count bands of ground-truth texture."""


def psnr_by_texture(run: Dict[str, Any], base: Dict[str, Any], window: int = 5) -> List[Dict[str, float]] | None:
    """Where ``run`` gains or loses against ``base`` (vanilla, same scene and seed): the PSNR of both runs' final
    renders in bands of the ground truth's local texture, from smooth to textured.

    Texture is the gradient magnitude of the ground truth's grey image, box-filtered over ``window`` pixels; the
    pixels of all saved views are ranked by it and split into :data:`TEXTURE_BANDS` bands of equal count (ranks, not
    values: a flat background has many equal values). Error-driven sampling trades one kind of region for the other.

    Returns:
        One entry per band, smooth first: ``texture`` (the band's mean texture, per pixel), ``vanilla_psnr`` and
        ``psnr`` (dB over the band's pixels), ``gain_db`` (their difference); None when either run folder or its
        renders are not on this machine.
    """
    import imageio.v3 as iio
    from scipy.ndimage import uniform_filter

    from nerf_inr_methods.coordfit import psnr_from_mse

    if not (has_run_folder(run) and has_run_folder(base)):
        return None
    run_renders, base_renders = (Path(r["config"]).parent / "renders" for r in (run, base))
    truths = sorted(base_renders.glob("*_gt.png"))
    if not truths or not all((run_renders / t.name.replace("_gt", "")).is_file() for t in truths):
        return None
    texture, base_error, run_error = [], [], []
    for truth_path in truths:
        view = truth_path.name.replace("_gt", "")
        truth, base_image, run_image = (
            iio.imread(path)[..., :3].astype(np.float64) / 255.0
            for path in (truth_path, base_renders / view, run_renders / view)
        )
        grad_rows, grad_cols = np.gradient(truth.mean(-1))
        texture.append(np.maximum(uniform_filter(np.hypot(grad_rows, grad_cols), window), 0.0).ravel())
        base_error.append(((base_image - truth) ** 2).mean(-1).ravel())
        run_error.append(((run_image - truth) ** 2).mean(-1).ravel())
    texture_all, base_all, run_all = (np.concatenate(v) for v in (texture, base_error, run_error))
    bands = []
    for band in np.array_split(np.argsort(texture_all, kind="stable"), TEXTURE_BANDS):
        # exact bands (a background both render perfectly) get 120 dB, not inf: the JSON stays finite
        base_psnr, run_psnr = (psnr_from_mse(max(float(e[band].mean()), 1e-12)) for e in (base_all, run_all))
        bands.append(
            {
                "texture": float(texture_all[band].mean()),
                "vanilla_psnr": base_psnr,
                "psnr": run_psnr,
                "gain_db": run_psnr - base_psnr,
            }
        )
    return bands


def final_difference(rows: Sequence[Dict[str, Any]], baseline_key: str, arm: str) -> Dict[str, Any]:
    """Paired final-PSNR difference (``final_psnr`` minus ``row[baseline_key]``, one row per seed) with the
    protocol's verdict (none for one seed)."""
    diff = reporting.paired_stats([r[baseline_key] for r in rows], [r["final_psnr"] for r in rows])
    if len(rows) >= 2:
        diff["verdict"] = reporting.verdict(diff["mean"], diff["std"], True, what=arm)
    else:
        diff["verdict"] = "one seed: no verdict"
    return diff


def recorded_texture_bands(previous: Dict[str, Any], scene: str, arm: str, seed: int) -> List[Dict[str, float]] | None:
    """``psnr_by_texture`` of (scene, arm, seed) in the ``analysis`` of an earlier results file ``previous``."""
    rows = previous.get("analysis", {}).get(scene, {}).get(arm, {}).get("per_seed", [])
    return next((r.get("psnr_by_texture") for r in rows if r.get("seed") == seed), None)


def analyse(
    records: List[Dict[str, Any]], config: PlateauConfig, previous: Dict[str, Any] | None = None
) -> Dict[str, Any]:
    """Per scene and arm: final PSNR/SSIM, paired difference vs vanilla, time and steps to vanilla's final PSNR
    (wall and CPU clocks), step time, plateau check of every run; and the same against vanilla's plateau runs of
    ``config.plateau_reference`` where there are any (:func:`versus_plateau`).

    ``previous`` (the results file being replaced) supplies ``psnr_by_texture`` where a run and its vanilla were
    both restored from it (their renders are not on this machine: the bands were measured from the same runs)."""
    by = {(r["scene"], r["arm"], r["seed"]): r for r in records if r and r.get("finished")}
    references = plateau_reference_runs(config)
    analysis: Dict[str, Any] = {}
    for scene in config.scenes:
        seeds = sorted({k[2] for k in by if k[0] == scene and k[1] == config.baseline})
        scene_out: Dict[str, Any] = {}
        for arm in config.arms:
            paired = [s for s in seeds if (scene, arm, s) in by]
            if not paired:
                continue
            rows = []
            for seed in paired:
                base, run = by[(scene, config.baseline, seed)], by[(scene, arm, seed)]
                target = base["final_psnr"]
                b_steps, b_wall, b_psnr = curve_arrays(base)
                _, b_cpu, _ = curve_arrays(base, "cpu_seconds")
                steps, wall, psnr = curve_arrays(run)
                _, cpu, _ = curve_arrays(run, "cpu_seconds")
                steps_reached = time_to_psnr(steps, psnr, target)
                rows.append(
                    {
                        "seed": seed,
                        "final_psnr": run["final_psnr"],
                        "final_ssim": run["final_ssim"],
                        "vanilla_final_psnr": target,
                        "plateau_gain_db": plateau_gain(steps, psnr),
                        "seconds_per_step": wall[-1] / steps[-1],
                        "cpu_seconds_per_step": cpu[-1] / steps[-1],
                        "steps_to_vanilla_final": steps_reached,
                        "steps_ratio_to_vanilla_final": ratio_of_times(
                            steps_reached, time_to_psnr(b_steps, b_psnr, target)
                        ),
                        "time_ratio_to_vanilla_final": ratio_of_times(
                            time_to_psnr(wall, psnr, target), time_to_psnr(b_wall, b_psnr, target)
                        ),
                        "cpu_ratio_to_vanilla_final": ratio_of_times(
                            time_to_psnr(cpu, psnr, target), time_to_psnr(b_cpu, b_psnr, target)
                        ),
                        "rays_trained": run["curve"][-1]["rays_trained"],
                        "rays_scored": run["curve"][-1]["rays_scored"],
                        **versus_plateau(run, base, references.get((scene, seed))),
                    }
                )
                if arm != config.baseline:
                    bands = psnr_by_texture(run, base)
                    if bands is None and previous and "restored_from" in run and "restored_from" in base:
                        bands = recorded_texture_bands(previous, scene, arm, seed)
                    rows[-1]["psnr_by_texture"] = bands
            entry: Dict[str, Any] = {"per_seed": rows}
            against_plateau = [r for r in rows if "plateau_vanilla_final_psnr" in r]
            if against_plateau:
                entry["final_psnr_minus_plateau_vanilla"] = final_difference(
                    against_plateau, "plateau_vanilla_final_psnr", arm
                )
            if arm != config.baseline:
                entry["final_psnr_minus_vanilla"] = final_difference(rows, "vanilla_final_psnr", arm)
            scene_out[arm] = entry
        analysis[scene] = scene_out
    return analysis


def _cell_ratio(rows: Sequence[Dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r[key] is not None]
    if not values:
        return f"never (0/{len(rows)})"
    return f"{fmt_pm(*mean_std(values))}x ({len(values)}/{len(rows)})"


def report_table(analysis: Dict[str, Any]) -> str:
    lines = []
    for scene, arms in analysis.items():
        if not arms:  # no finished run of this scene yet (its curves are in the results' unfinished runs)
            continue
        rows = []
        for arm, entry in arms.items():
            seeds = entry["per_seed"]
            finals = [r["final_psnr"] for r in seeds]
            diff = entry.get("final_psnr_minus_vanilla")
            rows.append(
                [
                    arm,
                    fmt_pm(*mean_std(finals)),
                    f"{np.mean([r['final_ssim'] for r in seeds]):.3f}",
                    "" if diff is None else f"{fmt_pm(diff['mean'], diff['std'])} ({diff['verdict']})",
                    _cell_ratio(seeds, "steps_ratio_to_vanilla_final"),
                    _cell_ratio(seeds, "time_ratio_to_vanilla_final"),
                    _cell_ratio(seeds, "cpu_ratio_to_vanilla_final"),
                    f"{np.mean([r['seconds_per_step'] for r in seeds]) * 1000:.0f}",
                    ", ".join(f"{r['plateau_gain_db']:+.2f}" for r in seeds),
                ]
            )
        headers = [
            "arm",
            "final PSNR (dB)",
            "SSIM",
            "vs vanilla (paired, dB)",
            "steps to vanilla's final",
            "(wall)",
            "(CPU)",
            "ms/step",
            "gain over last 20% (dB)",
        ]
        lines.append(f"### {scene}\n\n" + reporting.markdown_table(headers, rows))
        lines += plateau_table(scene, arms)
    return "\n\n".join(lines)


def plateau_table(scene: str, arms: Dict[str, Any]) -> List[str]:
    """The table against vanilla's plateau runs (no lines when the analysis has none)."""
    rows = []
    for arm, entry in arms.items():
        diff = entry.get("final_psnr_minus_plateau_vanilla")
        if diff is None:
            continue
        seeds = [r for r in entry["per_seed"] if "plateau_vanilla_final_psnr" in r]
        rows.append(
            [
                arm,
                ", ".join(
                    f"{r['plateau_vanilla_final_psnr']:.2f} (s{r['seed']}, {r['plateau_vanilla_steps']})" for r in seeds
                ),
                f"{fmt_pm(diff['mean'], diff['std'])} ({diff['verdict']})",
                _cell_ratio(seeds, "steps_ratio_to_plateau_vanilla_final"),
            ]
        )
    if not rows:
        return []
    headers = ["arm", "vanilla's plateau final (dB; seed, steps)", "vs it (paired, dB)", "steps to it"]
    title = f"### {scene}: against vanilla trained to its plateau (`--plateau-reference`)"
    return [f"{title}\n\n" + reporting.markdown_table(headers, rows)]


def plot_curves(records: List[Dict[str, Any]], path: Path) -> None:
    """Test PSNR vs training wall-clock (top row) and vs steps (bottom row: free of the machine's load, which
    differs between runs trained in different sessions), one column per scene; one colour per arm, seeds by line
    style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = sorted({r["scene"] for r in records})
    fig, axes = plt.subplots(2, len(scenes), figsize=(6 * len(scenes), 8.5), squeeze=False)
    colors: Dict[str, Any] = {}
    for column, scene in enumerate(scenes):
        for r in (r for r in records if r["scene"] == scene):
            color = colors.setdefault(r["arm"], f"C{len(colors) % 10}")
            steps, wall, psnr = curve_arrays(r)
            style = dict(color=color, alpha=0.85, linestyle=("-", "--", ":")[r["seed"] % 3])
            axes[0][column].plot(wall / 60, psnr, label=f"{r['arm']} s{r['seed']}", **style)
            axes[1][column].plot(steps, psnr, **style)
        axes[0][column].set_title(f"{scene}: test PSNR vs training time")
        axes[0][column].set_xlabel("training wall-clock (min, evaluation excluded)")
        axes[1][column].set_title(f"{scene}: test PSNR vs steps")
        axes[1][column].set_xlabel("training step")
        for ax in axes[:, column]:
            ax.set_ylabel("PSNR (dB)")
            ax.grid(alpha=0.3)
        axes[0][column].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def montage(records: List[Dict[str, Any]], scene: str, seed: int, view: str, path: Path) -> bool:
    """Ground truth beside every arm's render of one test view, with each arm's PSNR on that view."""
    import imageio.v3 as iio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if r["scene"] == scene and r["seed"] == seed]
    if not runs or not all(has_run_folder(r) for r in runs):  # keep the picture drawn where every run was
        return False
    run_dirs = [Path(r["config"]).parent for r in runs]
    gt = run_dirs[0] / "renders" / f"{view}_gt.png"
    if not gt.is_file():
        return False
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(2.2 * (len(runs) + 1), 2.6))
    axes[0].imshow(iio.imread(gt))
    axes[0].set_title("ground truth", fontsize=8)
    index = int(view.split("_")[-1])
    for ax, r, d in zip(axes[1:], runs, run_dirs, strict=True):
        ax.imshow(iio.imread(d / "renders" / f"{view}.png"))
        views_psnr = dict(zip(_view_indices(r), r["final_psnr_per_view"], strict=True))
        ax.set_title(f"{r['arm']}\n{views_psnr[index]:.2f} dB", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _view_indices(record: Dict[str, Any]) -> List[int]:
    every = SCENES[record["scene"]]["view_every"]
    return [i * every for i in range(len(record["final_psnr_per_view"]))]


MESH_SETTINGS = "inr-mesh defaults (--coordinates model; opacity over the voxel or the uniform ray-sample interval)"
"""What ``mesh.json`` caches were made with: a cache from other settings (e.g. before inr-mesh's default level
changed) is made again."""


def mesh_run(record: Dict[str, Any]) -> Dict[str, Any]:
    """``inr-mesh`` with its default settings on a finished run (model coordinates, ``mesh.ply`` in the run
    folder); the outcome (faces, vertices, inside the scene box, or the error) is cached in ``mesh.json``."""
    from nerf_inr_methods.nerfstudio_plugin.export_mesh import ExportMesh

    run_dir = Path(record["config"]).parent
    cache = run_dir / "mesh.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == record["key"] and cached.get("settings") == MESH_SETTINGS:
            return cached
    out: Dict[str, Any] = {"key": record["key"], "settings": MESH_SETTINGS}
    try:
        export = ExportMesh(load_config=run_dir / "config.yml", output_path=run_dir / "mesh.ply", coordinates="model")
        mesh_path = export.main()
    except ValueError as error:
        out.update(ok=False, error=str(error))
    else:
        import trimesh

        mesh = trimesh.load(mesh_path, process=False, force="mesh")
        out.update(
            ok=len(mesh.faces) > 0,
            path=str(mesh_path),
            vertices=len(mesh.vertices),
            faces=len(mesh.faces),
            inside_scene_box=bool(np.all(np.abs(mesh.vertices) <= 1.5 + 1e-3)),
        )
    reporting.write_json(out, cache)
    return out


def mesh_views(
    records: List[Dict[str, Any]], meshes: Dict[str, Dict[str, Any]], path: Path, num_views: int = 3
) -> bool:
    """Ground-truth test views (top row) beside the meshes of ``records`` drawn from the same cameras (one row
    per run), as ``inr-mesh`` extracted them with its defaults."""
    import imageio.v3 as iio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nerfstudio.data.datasets.base_dataset import InputDataset

    from nerf_inr_methods.demo import draw_mesh, load_mesh_for_drawing, spread_indices
    from nerf_inr_methods.nerfstudio_plugin.config_loader import load_run_config

    runs = [r for r in records if meshes.get(r["key"], {}).get("ok")]
    if not runs or not all(has_run_folder(r) for r in records):  # a run drawn from elsewhere: keep the picture
        return False
    config = load_run_config(Path(runs[0]["config"]))
    datamanager = config.pipeline.datamanager
    if datamanager.data is not None:  # ns-train's --data reaches the dataparser through the datamanager
        datamanager.dataparser.data = datamanager.data
    outputs = datamanager.dataparser.setup().get_dataparser_outputs(split="test")
    cameras = InputDataset(outputs, scale_factor=datamanager.camera_res_scale_factor).cameras
    views = [_view_indices(runs[0])[i] for i in spread_indices(num_views, len(_view_indices(runs[0])))]
    render_dir = Path(runs[0]["config"]).parent / "renders"
    fig, axes = plt.subplots(len(runs) + 1, len(views), figsize=(2.6 * len(views), 2.7 * (len(runs) + 1)))
    for ax, view in zip(axes[0], views, strict=True):
        ax.imshow(iio.imread(render_dir / f"test_{view:03d}_gt.png"))
        ax.set_title(f"ground truth, test view {view}", fontsize=8)
        ax.axis("off")
    for row, record in zip(axes[1:], runs, strict=True):
        vertices, faces, colors = load_mesh_for_drawing(Path(meshes[record["key"]]["path"]))
        for ax, view in zip(row, views, strict=True):
            draw_mesh(ax, vertices, faces, colors, cameras[view : view + 1], scale=2)
            ax.set_title(f"{record['arm']} mesh ({len(faces)} faces)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def report(config: PlateauConfig) -> Dict[str, Any]:
    specs = plateau_specs(config)
    previous = json.loads(config.results.read_text()) if config.results.is_file() else {}
    recorded = recorded_runs(config.results)
    found = (finished_record(s, config, recorded) or load_record(s, config.output_dir) for s in specs)
    started = [r for r in found if r]
    records = [r for r in started if r.get("finished")]
    # an unfinished run whose folder is not here (a fresh checkout) keeps its partial curve in the results
    here = {r["key"] for r in started}
    wanted = {s.key() for s in specs}
    started += [
        {**r, "restored_from": r.get("restored_from", config.results.name)}
        for r in previous.get("unfinished_runs", [])
        if r.get("key") in wanted and r["key"] not in here
    ]
    restored = [r["arm"] + f" s{r['seed']} ({r['scene']})" for r in started if "restored_from" in r]
    if restored:
        print(f"runs whose folders are not here, taken from {config.results.name}: {', '.join(restored)}")
    analysis = analyse(records, config, previous)
    table = report_table(analysis) + "\n\n" + plateau_check_note(next(s for s in specs if s.arm == config.baseline))
    stem = config.results.with_suffix("")
    plot_curves(records, Path(f"{stem}_psnr_vs_time.png")) if records else None
    for scene in config.scenes:
        montage(records, scene, config.seeds[0], "test_000", Path(f"{stem}_{scene}_test_views.png"))
    meshes = {r["key"]: mesh_run(r) for r in records if has_run_folder(r)} if config.meshes else {}
    for record in records:
        if record["key"] in meshes:
            record["mesh"] = {k: v for k, v in meshes[record["key"]].items() if k != "key"}
    for scene in config.scenes:
        first = [r for r in records if r["scene"] == scene and r["seed"] == config.seeds[0]]
        best = max((r for r in first if r["arm"] != config.baseline), key=lambda r: r["final_psnr"], default=None)
        shown = [r for r in first if r["arm"] == config.baseline] + ([best] if best else [])
        mesh_views(shown, meshes, Path(f"{stem}_{scene}_meshes.png"))
    vanilla = {
        scene: [r for r in records if r["scene"] == scene and r["arm"] == config.baseline] for scene in config.scenes
    }
    summary = "; ".join(
        f"{scene} vanilla {fmt_pm(*mean_std([r['final_psnr'] for r in rs]))} dB "
        f"(gain over last 20%: {', '.join(f'{plateau_gain(*curve_arrays(r)[::2]):+.2f}' for r in rs)} dB, "
        f"{np.mean([r['curve'][-1]['train_seconds'] for r in rs]) / 60:.1f} min)"
        for scene, rs in vanilla.items()
        if rs
    )
    payload = {
        "benchmark": "nerf_plateau",
        "command": reporting.command_line(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()},
        "environment": reporting.environment_info(),
        "schedule": {
            "steps": config.steps,
            "hold": config.hold,
            "decay_end": config.decay_end,
            "lr_final_ratio": config.lr_final_ratio,
            "rays": config.rays,
            "samples": list(config.samples),
        },
        "tuning": tuned_lrs(config),
        "runs": records,
        "unfinished_runs": [r for r in started if not r.get("finished")],
        "analysis": analysis,
        "table": table,
        "summary_line": f"SUMMARY nerf_plateau: {summary}",
    }
    reporting.write_json(payload, config.results)
    Path(f"{stem}.md").write_text(table + "\n")
    print(table)
    print(payload["summary_line"])
    return payload


def make_synthetic_scene_if_absent(data: Path) -> None:
    """Generate the synthetic scene into ``data`` (data_scripts/make_synthetic_scene.py) unless it is there already."""
    if not (data / "transforms_train.json").is_file():
        script = ROOT / "data_scripts" / "make_synthetic_scene.py"
        subprocess.run([sys.executable, str(script), "--out-dir", str(data)], check=True)


def main(config: PlateauConfig) -> Dict[str, Any] | None:
    if config.quick:
        config = dataclasses.replace(
            config,
            scenes=("synthetic",),
            arms=("vanilla", "iga"),
            seeds=(0,),
            steps=200,
            eval_every=100,
            tune_steps=10,
            tune_scene="synthetic",
            results=config.output_dir / "nerf_plateau_quick.json",
            plateau_reference=None,
        )
    config = checked_config(config)
    if config.stage in ("tune", "all"):
        tune(config)
    if config.stage in ("train", "all"):
        train_all(plateau_specs(config), config)
    if config.stage in ("report", "all"):
        return report(config)
    return None


def checked_config(config: PlateauConfig) -> PlateauConfig:
    """``config`` with its baseline among its arms, after checking arms, lrs and scenes (ValueError / FileNotFoundError
    naming the flag); generates the synthetic scene when it is asked for and absent."""
    unknown = [a for a in config.arms if a not in ARMS]
    if unknown:
        raise ValueError(f"--arms: unknown arm(s) {unknown}; expected some of {sorted(ARMS)}")
    bad_lrs = {
        arm: lr for arm, lr in config.lrs.items() if arm not in config.arms and arm != config.baseline or not lr > 0
    }
    if bad_lrs:
        raise ValueError(f"--lrs: expected arms of --arms with lrs > 0, got {bad_lrs}")
    if config.baseline not in config.arms:
        config = dataclasses.replace(config, arms=(config.baseline, *config.arms))
    for flag, scenes in (("--paired-scenes", config.paired_scenes), ("--scenes", config.scenes)):
        unknown = [scene for scene in scenes if scene not in SCENES]
        if unknown:
            raise ValueError(f"{flag}: unknown scene {unknown[0]!r}; expected some of {sorted(SCENES)}")
    for scene in config.scenes:
        data = Path(scene_data(config, scene) or SCENES[scene]["data"])
        if scene == "synthetic":
            make_synthetic_scene_if_absent(data)
        if not data.exists():
            raise FileNotFoundError(f"scene {scene}: data folder {data} does not exist")
    return config


if __name__ == "__main__":
    main(tyro.cli(PlateauConfig))
