"""nerfacto's sizes on a CPU: seconds per training step of candidate set-ups, measured interleaved, and (``--train``)
test PSNR against training time on mic at 100 px.

nerfacto falls back to its torch hash grid without tiny-cuda-nn. Its cost on a CPU is dominated by the dense gradients
and Adam updates of the hash tables (every entry of every level, every step, however few rays touch them) and by the
samples per ray of the proposal networks and the field. Each candidate (:data:`CANDIDATES`) is a set of config
overrides on ``inr-nerfacto`` (nerfacto through our pipeline, uniform rays); all candidates are built in one process
and timed round-robin, a few steps each per round, so the machine's load (shared with other work) falls on all of
them alike: the per-step medians are comparable with each other, not across sessions.

``--train``: each chosen candidate (``--train-candidates``) is trained ``--train-steps`` steps on mic at 100 px, test
PSNR on every 20th test view every ``--eval-every`` steps; the candidates are trained in one process, alternating
blocks of ``--eval-every`` steps, for the same reason. The yardstick is the time to vanilla NeRF's 31 dB (the CPU
preset's vanilla on mic at 100 px reaches 31 dB in 21-31 min alone on this machine).

Run from the repository root: ``python -m benchmarks.nerfacto_cpu --help``; ``--quick`` times 2 candidates on the
generated synthetic scene, writing outside tracked files.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import tyro

from benchmarks.common import RESULTS_DIR
from nerf_inr_methods import reporting

ROOT = Path(__file__).resolve().parents[1]
MIC = ROOT.parent / "shared" / "data" / "blender" / "mic"
SYNTHETIC = ROOT / "data" / "synthetic-demo"


def _sizes(table: int, levels: int, max_res: int, proposal: Tuple[int, int], nerf: int, **extra: Any) -> Dict[str, Any]:
    """Overrides of one candidate: the field's hash table (log2 size, levels, finest resolution), samples per ray."""
    return {
        "pipeline.model.log2_hashmap_size": table,
        "pipeline.model.num_levels": levels,
        "pipeline.model.max_res": max_res,
        "pipeline.model.num_proposal_samples_per_ray": proposal,
        "pipeline.model.num_nerf_samples_per_ray": nerf,
        **extra,
    }


def _proposals(table: int, levels: int = 5, max_res: Tuple[int, int] = (128, 256)) -> Dict[str, Any]:
    return {
        "pipeline.model.proposal_net_args_list": [
            {"hidden_dim": 16, "log2_hashmap_size": table, "num_levels": levels, "max_res": res, "use_linear": False}
            for res in max_res
        ]
    }


CANDIDATES: Dict[str, Dict[str, Any]] = {
    "defaults": _sizes(19, 16, 2048, (256, 96), 48),
    "issue-reduced": _sizes(17, 12, 2048, (64, 32), 32),
    "t15-l12-r512": _sizes(15, 12, 512, (64, 32), 32),
    "t15-l12-r512-p14": _sizes(15, 12, 512, (64, 32), 32, **_proposals(14)),
    "t14-l8-r256-p14": _sizes(14, 8, 256, (64, 32), 32, **_proposals(14)),
    "t16-l12-r512-p14": _sizes(16, 12, 512, (64, 32), 32, **_proposals(14)),
    "t15-l12-r512-p14-s32+16-n24": _sizes(15, 12, 512, (32, 16), 24, **_proposals(14)),
    "t15-l12-r512-p14-rays1024": _sizes(
        15, 12, 512, (64, 32), 32, **_proposals(14), **{"pipeline.datamanager.train_num_rays_per_batch": 1024}
    ),
}
"""name -> overrides on ``inr-nerfacto`` (``t`` log2 table size, ``l`` levels, ``r`` finest resolution of the field,
``p`` log2 table size of both proposal networks, ``s`` proposal samples, ``n`` field samples); all at the torch
implementation, 256 rays per step (``--rays``)."""

BLENDER_NERFACTO = {
    "pipeline.model.background_color": "white",
    "pipeline.model.near_plane": 2.0,
    "pipeline.model.far_plane": 6.0,
    "pipeline.model.disable_scene_contraction": True,
    "pipeline.model.proposal_initial_sampler": "uniform",
    "pipeline.model.camera_optimizer.mode": "off",
}
"""nerfacto on a Blender scene as nerfstudio's documentation sets it up (white background, Blender's near/far planes
2 / 6, no scene contraction: the object sits in the scene box; uniform initial proposal samples; exact poses, no
camera optimizer)."""


@dataclass
class NerfactoCpuConfig:
    """Seconds per step of nerfacto set-ups on this CPU (interleaved), optionally PSNR vs time on mic at 100 px."""

    candidates: Tuple[str, ...] = tuple(CANDIDATES)
    """Candidates to time (names of CANDIDATES)."""
    rays: int = 256
    """Rays per training step."""
    rounds: int = 4
    """Round-robin rounds; each round times ``steps_per_round`` steps of every candidate."""
    steps_per_round: int = 3
    """Steps of one candidate per round (after one untimed warm-up step in round 0)."""
    threads: int = 1
    """Torch threads."""
    train: bool = False
    """Also train ``train_candidates`` on mic (PSNR vs training time)."""
    train_candidates: Tuple[str, ...] = ("t15-l12-r512-p14",)
    """Candidates to train with --train."""
    train_steps: int = 2000
    """Steps per trained candidate."""
    eval_every: int = 250
    """Steps between test evaluations (every 20th test view) of the trained candidates."""
    data: Path = MIC
    """Blender scene (loaded at half resolution: mic's 200 px files at 100 px)."""
    results: Path = RESULTS_DIR / "nerfacto_cpu.json"
    """Results JSON."""
    output_dir: Path = ROOT / "outputs" / "nerfacto_cpu"
    """Run folders of the candidates."""
    quick: bool = False
    """Smoke run: 2 candidates, 1 round, the synthetic scene, results below output_dir."""


def candidate_config(name: str, config: NerfactoCpuConfig, steps: int):
    """The TrainerConfig of one candidate (inr-nerfacto, torch hash grid, Blender set-up, 100 px)."""
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    overrides = {
        "pipeline.datamanager.dataparser": BlenderDataParserConfig(),
        "pipeline.datamanager.camera_res_scale_factor": 0.5,
        "pipeline.datamanager.train_num_rays_per_batch": config.rays,
        "pipeline.model.implementation": "torch",
        **BLENDER_NERFACTO,
        **CANDIDATES[name],
    }
    return prepare_config(
        "inr-nerfacto", config.data, config.output_dir, steps=steps, preset=None, timestamp=name, overrides=overrides
    )


def time_candidates(config: NerfactoCpuConfig) -> Dict[str, Dict[str, Any]]:
    """Per candidate: every timed step's seconds, their median, and the parameter count."""
    import torch

    from benchmarks.nerf_common import train_step
    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers

    trainers = {}
    with own_event_writers():
        for name in config.candidates:
            trainer = candidate_config(name, config, steps=10**6).setup(local_rank=0, world_size=1)
            trainer.setup()
            trainers[name] = trainer
        step_seconds: Dict[str, List[float]] = {name: [] for name in trainers}
        steps = {name: 0 for name in trainers}
        for name, trainer in trainers.items():  # warm-up (first-step allocations)
            train_step(trainer, 0)
            steps[name] = 1
        for round_index in range(config.rounds):
            for name, trainer in trainers.items():
                for _ in range(config.steps_per_round):
                    start = time.perf_counter()
                    train_step(trainer, steps[name])
                    step_seconds[name].append(time.perf_counter() - start)
                    steps[name] += 1
            medians = {n: f"{statistics.median(s):.2f}" for n, s in step_seconds.items()}
            print(f"round {round_index + 1}/{config.rounds}: median s/step {medians}", flush=True)
    out = {}
    for name, trainer in trainers.items():
        parameters = sum(p.numel() for p in trainer.pipeline.model.parameters())
        out[name] = {
            "overrides": {k: repr(v) for k, v in CANDIDATES[name].items()},
            "parameters": parameters,
            "step_seconds": step_seconds[name],
            "median_seconds_per_step": statistics.median(step_seconds[name]),
        }
        del trainer
    torch.set_num_threads(config.threads)
    return out


def train_candidates(config: NerfactoCpuConfig) -> Dict[str, Dict[str, Any]]:
    """PSNR (every 20th test view) against training wall-clock of ``train_candidates``, trained in alternating
    blocks of ``eval_every`` steps in this process."""
    from benchmarks.nerf_common import load_eval_views, train_step
    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers

    curves: Dict[str, Dict[str, Any]] = {}
    with own_event_writers():
        trainers, views = {}, {}
        for name in config.train_candidates:
            trainer = candidate_config(name, config, steps=config.train_steps).setup(local_rank=0, world_size=1)
            trainer.setup()
            trainers[name] = trainer
            views[name] = load_eval_views(trainer.pipeline, split="test", every=20)
            curves[name] = {"curve": [{"step": 0, "train_seconds": 0.0, **_psnr(trainer, views[name])}]}
        wall = {name: 0.0 for name in trainers}
        for block_start in range(0, config.train_steps, config.eval_every):
            block_end = min(block_start + config.eval_every, config.train_steps)
            for name, trainer in trainers.items():
                start = time.perf_counter()
                for step in range(block_start, block_end):
                    train_step(trainer, step)
                wall[name] += time.perf_counter() - start
                point = {"step": block_end, "train_seconds": wall[name], **_psnr(trainer, views[name])}
                curves[name]["curve"].append(point)
                print(f"  [{name}] step {block_end} {wall[name]:6.0f} s PSNR {point['psnr']:.2f}", flush=True)
    return curves


def _psnr(trainer, views) -> Dict[str, float]:
    from benchmarks.nerf_common import evaluate_views

    return {"psnr": evaluate_views(trainer.pipeline, views)["psnr"]}


def main(config: NerfactoCpuConfig) -> Dict[str, Any]:
    import torch

    if config.quick:
        config = dataclasses.replace(
            config,
            candidates=("issue-reduced", "t14-l8-r256-p14"),
            rounds=1,
            steps_per_round=1,
            data=SYNTHETIC,
            train=False,
            results=config.output_dir / "nerfacto_cpu_quick.json",
        )
    unknown = [c for c in (*config.candidates, *config.train_candidates) if c not in CANDIDATES]
    if unknown:
        raise ValueError(f"--candidates / --train-candidates: unknown {unknown}; expected some of {sorted(CANDIDATES)}")
    if not Path(config.data).is_dir():
        raise FileNotFoundError(f"--data {config.data} is not a folder (expected a Blender scene)")
    torch.set_num_threads(config.threads)
    timings = time_candidates(config) if config.candidates else {}
    rows = [
        [name, f"{t['parameters'] / 1e6:.2f}", f"{t['median_seconds_per_step']:.2f}", str(len(t["step_seconds"]))]
        for name, t in timings.items()
    ]
    table = reporting.markdown_table(["candidate", "parameters (M)", "median s/step", "steps timed"], rows)
    payload: Dict[str, Any] = {
        "benchmark": "nerfacto_cpu",
        "command": reporting.command_line(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()},
        "environment": reporting.environment_info(),
        "commit": reporting.git_commit(),
        "blender_setup": {k: repr(v) for k, v in BLENDER_NERFACTO.items()},
        "timings": timings,
        "table": table,
    }
    print(table)
    if config.train:
        payload["training"] = train_candidates(config)
    reporting.write_json(payload, config.results)
    fastest = min(timings, key=lambda n: timings[n]["median_seconds_per_step"]) if timings else None
    print(f"SUMMARY nerfacto_cpu: fastest {fastest}" if fastest else "SUMMARY nerfacto_cpu: no timings")
    return payload


if __name__ == "__main__":
    main(tyro.cli(NerfactoCpuConfig))
