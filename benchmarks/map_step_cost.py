"""The error map's cost per training step against vanilla's: ``int-map-nerf`` and ``inr-nerf``, interleaved.

Both methods (CPU preset, mic at 100 px; the generated synthetic scene when ../shared/data is absent) are built in one
process and trained in alternating short blocks of ``--steps-per-block`` steps (order reversed every round: ABBA), at
each torch thread count of ``--thread-counts``, so the machine's load (shared with other runs) falls on both alike:
the ratio of their CPU times per step is fair, their absolute milliseconds are not comparable across sessions. The
first ``--warmup-steps`` steps of each arm at each thread count are not timed.

Clocks per step: wall-clock (``time.perf_counter``) and process CPU time (``time.process_time``, every thread of the
process) around nerfstudio's whole training step (callbacks, pipeline step, backward, optimizer), synchronised on
CUDA. After the timed rounds, ``--breakdown-steps`` further steps of each arm run with timers around the phases of
the step (the datamanager's pixel sampler and ray generator, the pool's draw, the sampler's selection, the error map's
read and write, the importance weights, the model's forward, loss, and the rest: backward and optimizer); timers cost
a little, so the breakdown's totals are not the ratio's numbers.

Run from the repository root: ``python -m benchmarks.map_step_cost`` (about 30 min here under load 7-11, most of it
the 2-thread steps; ``--thread-counts 1``: about 8 min); ``--quick`` is a smoke run on the synthetic scene writing
outside tracked files. Write-up: ``benchmarks/results/map_step_cost.md``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import BenchmarkOptions, finish, log, markdown_table, parse

ROOT = Path(__file__).resolve().parents[1]
MIC = ROOT.parent / "shared" / "data" / "blender" / "mic"
SYNTHETIC = ROOT / "data" / "synthetic-demo"
ARMS: dict[str, str] = {"vanilla": "inr-nerf", "error-map": "int-map-nerf"}
"""arm -> registered method (both with the CPU preset, same seed and data)."""
MAX_RATIO = 1.05
"""The bar of issue 44: the error map's CPU time per step at most this times vanilla's."""


@dataclass
class MapStepCostConfig(BenchmarkOptions):
    """CPU time per training step of int-map-nerf against inr-nerf (vanilla), interleaved, at 1 and 2 threads.

    --quick: the synthetic scene, 1 round of 3 steps per arm and thread count, 2 breakdown steps."""

    thread_counts: tuple[int, ...] = (1, 2)
    """torch intra-op thread counts to measure (each a separate block of rounds)."""
    rounds: int | None = None
    """Rounds per thread count; each round trains every arm ``steps_per_block`` steps (default 40; quick 1)."""
    steps_per_block: int | None = None
    """Consecutive steps of one arm in a round (default 3: short blocks pair the arms closely in time; quick 3)."""
    warmup_steps: int | None = None
    """Untimed steps of each arm at each thread count before its rounds (default 10; quick 1)."""
    breakdown_steps: int | None = None
    """Steps of each arm per thread count timed phase by phase after the rounds (default 20; quick 2)."""
    data: Path | None = None
    """Blender scene (default: ../shared/data/blender/mic at 100 px; the synthetic scene when absent, or quick)."""
    seed: int = 0
    """Seed of both arms (nerfstudio's machine.seed)."""
    output_dir: Path = ROOT / "outputs" / "map_step_cost"
    """Run folders of the two trainers (nothing is saved there but their config)."""

    def resolved(self) -> MapStepCostConfig:
        options = self.with_run_defaults(
            "map_step_cost", rounds=(40, 1), steps_per_block=(3, 3), warmup_steps=(10, 1), breakdown_steps=(20, 2)
        )
        if options.data is None:
            options = dataclasses.replace(options, data=SYNTHETIC if self.quick or not MIC.is_dir() else MIC)
        if not options.thread_counts or min(options.thread_counts) < 1:
            raise ValueError(f"--thread-counts must be >= 1 each, got {options.thread_counts}")
        for name in ("rounds", "steps_per_block"):
            if getattr(options, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(options, name)}")
        return options


def trainer_of(method: str, config: MapStepCostConfig, total_steps: int):
    """A set-up nerfstudio Trainer of ``method`` (CPU preset, the scene at 100 px for mic, seed ``config.seed``).

    The error map's schedules span ``total_steps`` (the steps this benchmark trains it), so its importance weights
    (alpha warmed up over the first 10%) are computed on most timed steps, as in a real run."""
    from nerfstudio.scripts.train import _set_random_seed

    from benchmarks.nerf_plateau import make_synthetic_scene_if_absent
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    data = Path(config.data)  # type: ignore[arg-type]
    if data == SYNTHETIC:
        make_synthetic_scene_if_absent(data)
    overrides = {"pipeline.datamanager.camera_res_scale_factor": 0.5} if data.name == "mic" else {}
    trainer_config = prepare_config(
        method,
        data,
        config.output_dir,
        steps=total_steps,
        preset="cpu",
        seed=config.seed,
        timestamp=method,
        overrides=overrides,
    )
    if getattr(trainer_config.pipeline, "int_enabled", False):
        trainer_config.pipeline.int_total_steps = total_steps
    _set_random_seed(config.seed)
    trainer = trainer_config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


# ------------------------------------------------------------------------------------------------ phase timers
class PhaseTimers:
    """Inclusive wall-clock and CPU seconds of named phases, by wrapping methods of live objects (restored on exit).

    A phase nested in another counts in both (the table indents it); CUDA is synchronised at each phase's ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._restore: list[Callable[[], None]] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block as phase ``name``."""
        self._sync()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._sync()
            self.wall[name] += time.perf_counter() - wall
            self.cpu[name] += time.process_time() - cpu
            self.calls[name] += 1

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        """Time every call of ``owner.attribute`` (a method, a module's function, an nn.Module's forward) as ``name``;
        a missing attribute is skipped (that phase does not exist in this code)."""
        if owner is None or not hasattr(owner, attribute):
            return
        original = getattr(owner, attribute)
        had_own = attribute in getattr(owner, "__dict__", {})

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)
        self._restore.append(lambda: setattr(owner, attribute, original) if had_own else delattr(owner, attribute))

    def restore(self) -> None:
        """Undo every :meth:`wrap`."""
        while self._restore:
            self._restore.pop()()


PHASES: tuple[tuple[str, str], ...] = (
    ("step", "training step (all)"),
    ("pipeline", "  pipeline step (data, selection, forward, loss)"),
    ("next_train", "    datamanager.next_train (vanilla, or each pool batch)"),
    ("pixel_sampler", "      pixel sampler (indices, colours)"),
    ("ray_generator", "      ray generator"),
    ("draw_pool", "    error map: the pool's draw (InrPipeline._draw_pool)"),
    ("select", "    error map: selection (IntSampler.select, pool draw included)"),
    ("map_read", "      map read (_error_map_values)"),
    ("draw", "      draw (_draw_proportional)"),
    ("weights", "        importance weights (inclusion_probabilities)"),
    ("train_rays", "    error map: the trained rays and batch rows (gather / ray generator)"),
    ("forward", "    model forward"),
    ("loss", "    metrics and loss"),
    ("map_write", "    error map: scores and map update (_ray_errors + record)"),
    ("rest", "  backward, optimizer, callbacks (step - pipeline)"),
)
"""(key, label) of the breakdown's rows in table order; a key's row is empty for an arm without that phase."""


def instrument(trainer, timers: PhaseTimers) -> None:
    """Wrap the phases of :data:`PHASES` of a trainer's pipeline with ``timers``."""
    from nerf_inr_methods.core import int_sampler as core

    pipeline = trainer.pipeline
    datamanager = pipeline.datamanager
    timers.wrap(pipeline, "train_step", "pipeline")
    timers.wrap(datamanager, "next_train", "next_train")
    timers.wrap(datamanager.train_pixel_sampler, "sample", "pixel_sampler")
    timers.wrap(datamanager.train_ray_generator, "forward", "ray_generator")
    timers.wrap(pipeline.model, "forward", "forward")
    timers.wrap(pipeline.model, "get_loss_dict", "loss")
    timers.wrap(pipeline, "_draw_pool", "draw_pool")
    timers.wrap(pipeline, "_train_rays", "train_rays")
    sampler = getattr(pipeline, "int_sampler", None)
    if sampler is not None:
        timers.wrap(sampler, "select", "select")
        timers.wrap(sampler, "_error_map_values", "map_read")
        timers.wrap(sampler, "_draw_proportional", "draw")
        timers.wrap(sampler, "record", "map_write")
        timers.wrap(pipeline, "_ray_errors", "map_write")
        timers.wrap(core, "inclusion_probabilities", "weights")


# ------------------------------------------------------------------------------------------------ measurement
def _load() -> float:
    """The machine's 1-minute load average."""
    return os.getloadavg()[0]


def timed_step(trainer, step: int) -> tuple[float, float]:
    """(wall s, CPU s) of one training step (nerf_common.train_step: callbacks, step, CUDA synchronised)."""
    from benchmarks.nerf_common import train_step

    wall, cpu = time.perf_counter(), time.process_time()
    train_step(trainer, step)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(config: MapStepCostConfig) -> dict[str, Any]:
    """Interleaved per-step clocks of both arms at each thread count, then the phase breakdown."""
    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers

    per_arm_steps = len(config.thread_counts) * (
        config.warmup_steps + config.rounds * config.steps_per_block + config.breakdown_steps  # type: ignore[operator]
    )
    raw: dict[str, Any] = {}
    breakdown: dict[str, Any] = {}
    with own_event_writers():
        trainers = {arm: trainer_of(method, config, per_arm_steps) for arm, method in ARMS.items()}
        steps = dict.fromkeys(trainers, 0)
        for threads in config.thread_counts:
            torch.set_num_threads(threads)
            for arm, trainer in trainers.items():
                for _ in range(config.warmup_steps):  # type: ignore[arg-type]
                    timed_step(trainer, steps[arm])
                    steps[arm] += 1
            clocks: dict[str, dict[str, list[float]]] = {arm: {"wall": [], "cpu": []} for arm in trainers}
            loads = [_load()]
            for round_index in range(config.rounds):  # type: ignore[arg-type]
                order = list(trainers) if round_index % 2 == 0 else list(reversed(trainers))
                for arm in order:
                    for _ in range(config.steps_per_block):  # type: ignore[arg-type]
                        wall, cpu = timed_step(trainers[arm], steps[arm])
                        steps[arm] += 1
                        clocks[arm]["wall"].append(wall)
                        clocks[arm]["cpu"].append(cpu)
                loads.append(_load())
                means = {a: 1e3 * statistics.fmean(c["cpu"]) for a, c in clocks.items()}
                log(f"threads {threads} round {round_index + 1}/{config.rounds}: CPU ms/step {means}, load {loads[-1]}")
            raw[str(threads)] = {"clocks": clocks, "load_average_1min": loads}
            breakdown[str(threads)] = {}
            for arm, trainer in trainers.items():
                timers = PhaseTimers(trainer.pipeline.device)
                instrument(trainer, timers)
                try:
                    for _ in range(config.breakdown_steps):  # type: ignore[arg-type]
                        with timers.phase("step"):
                            timed_step(trainer, steps[arm])
                        steps[arm] += 1
                finally:
                    timers.restore()
                n = max(1, int(config.breakdown_steps))  # type: ignore[arg-type]
                wall = {k: 1e3 * v / n for k, v in timers.wall.items()}
                cpu = {k: 1e3 * v / n for k, v in timers.cpu.items()}
                wall["rest"] = wall["step"] - wall.get("pipeline", 0.0)
                cpu["rest"] = cpu["step"] - cpu.get("pipeline", 0.0)
                breakdown[str(threads)][arm] = {
                    "wall_ms_per_step": wall,
                    "cpu_ms_per_step": cpu,
                    "calls_per_step": {k: v / n for k, v in timers.calls.items()},
                }
        device = str(next(iter(trainers.values())).pipeline.device)
    return {"raw": raw, "breakdown": breakdown, "device": device}


def summarise(measured: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows ``{threads, arm, ms_per_step, cpu_ms_per_step, ...}`` (means over the timed steps) and, per thread
    count, the error map's CPU ratio to vanilla: of the means, and the median of the per-round ratios."""
    rows: list[dict[str, Any]] = []
    ratios: dict[str, Any] = {}
    for threads, block in measured["raw"].items():
        clocks = block["clocks"]
        for arm, c in clocks.items():
            rows.append(
                {
                    "threads": int(threads),
                    "arm": arm,
                    "method": ARMS[arm],
                    "ms_per_step": 1e3 * statistics.fmean(c["wall"]),
                    "cpu_ms_per_step": 1e3 * statistics.fmean(c["cpu"]),
                    "median_cpu_ms_per_step": 1e3 * statistics.median(c["cpu"]),
                    "steps_timed": len(c["cpu"]),
                }
            )
        blocks = len(block["load_average_1min"]) - 1
        per_block = len(clocks["vanilla"]["cpu"]) // max(1, blocks)
        round_ratios = [
            sum(clocks["error-map"]["cpu"][i * per_block : (i + 1) * per_block])
            / sum(clocks["vanilla"]["cpu"][i * per_block : (i + 1) * per_block])
            for i in range(blocks)
        ]
        mean_cpu = {arm: statistics.fmean(c["cpu"]) for arm, c in clocks.items()}
        mean_wall = {arm: statistics.fmean(c["wall"]) for arm, c in clocks.items()}
        ratios[threads] = {
            "cpu_ratio": mean_cpu["error-map"] / mean_cpu["vanilla"],
            "wall_ratio": mean_wall["error-map"] / mean_wall["vanilla"],
            "cpu_ratio_per_round": round_ratios,
            "cpu_ratio_median_of_rounds": statistics.median(round_ratios),
            "cpu_ratio_spread_of_rounds": [min(round_ratios), max(round_ratios)],
            "load_average_1min": [min(block["load_average_1min"]), max(block["load_average_1min"])],
        }
    return rows, ratios


def breakdown_table(breakdown: dict[str, Any]) -> str:
    """Markdown table of the phases' CPU ms per step, one column per (threads, arm)."""
    columns = [(t, arm) for t in breakdown for arm in breakdown[t]]
    header = ["phase (CPU ms per step)"] + [f"{arm} {t} thr" for t, arm in columns]
    rows = []
    for key, label in PHASES:
        cells = [breakdown[t][arm]["cpu_ms_per_step"].get(key) for t, arm in columns]
        if all(c is None for c in cells):
            continue
        rows.append([label.replace(" ", "&nbsp;", len(label) - len(label.lstrip()))] + [_ms(c) for c in cells])
    return markdown_table(header, rows)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def main(config: MapStepCostConfig) -> dict[str, Any]:
    start = time.perf_counter()
    log(f"map_step_cost: {config.data}, threads {config.thread_counts}, load {_load():.2f}")
    measured = measure(config)
    rows, ratios = summarise(measured)
    table = markdown_table(
        ["threads", "arm", "ms/step (wall)", "CPU ms/step", "median CPU ms/step", "steps"],
        [
            [
                str(r["threads"]),
                f"{r['arm']} ({r['method']})",
                f"{r['ms_per_step']:.1f}",
                f"{r['cpu_ms_per_step']:.1f}",
                f"{r['median_cpu_ms_per_step']:.1f}",
                str(r["steps_timed"]),
            ]
            for r in rows
        ],
    )
    ratio_table = markdown_table(
        ["threads", "CPU ratio (means)", "median of rounds", "rounds' range", "wall ratio", "load (1 min)"],
        [
            [
                t,
                f"{r['cpu_ratio']:.3f}",
                f"{r['cpu_ratio_median_of_rounds']:.3f}",
                "{:.3f}-{:.3f}".format(*r["cpu_ratio_spread_of_rounds"]),
                f"{r['wall_ratio']:.3f}",
                "{:.1f}-{:.1f}".format(*r["load_average_1min"]),
            ]
            for t, r in ratios.items()
        ],
    )
    parts = breakdown_table(measured["breakdown"])
    print(table)
    print()
    print(ratio_table)
    print()
    print(parts)
    verdicts = ", ".join(
        f"{t} thr {r['cpu_ratio']:.3f}x ({'<=' if r['cpu_ratio'] <= MAX_RATIO else '>'} {MAX_RATIO})"
        for t, r in ratios.items()
    )
    summary = f"SUMMARY map_step_cost: int-map-nerf CPU time per step / inr-nerf's, interleaved: {verdicts}"
    results = {
        "data": str(config.data),
        "device": measured["device"],
        "rows": rows,
        "ratios": ratios,
        "breakdown": measured["breakdown"],
        "raw_step_seconds": measured["raw"],
        "tables": {"steps": table, "ratios": ratio_table, "breakdown": parts},
    }
    return finish("map_step_cost", config, results, summary, start=start)


if __name__ == "__main__":
    main(parse(MapStepCostConfig))
