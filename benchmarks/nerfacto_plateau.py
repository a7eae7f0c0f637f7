"""nerfacto against int-map-nerfacto (rays drawn by the error map) at nerfacto's plateau (issue 43).

Two arms, the same model (``InrNerfactoModel``), datamanager, trainer, lr and plateau schedule; they differ in which
rays a step trains:

- ``nerfacto``: method ``inr-nerfacto``, uniform rays (nerfstudio's VanillaPipeline call for call);
- ``int-map-nerfacto``: method ``int-map-nerfacto``, every batch drawn by the error map from 4 batches of candidates,
  the RGB loss importance-weighted (nerfacto's interlevel and distortion losses unweighted: see ``inr_nerfacto``).

Everything else is :mod:`benchmarks.nerf_plateau`'s machinery, reused: run folders (real nerfstudio runs, so
``ns-eval``, ``ns-render`` and ``inr-mesh`` work on them), resume from the last checkpoint, finished runs reused, each
run tagged with its commit (per resumed segment), the plateau rule (< 0.1 dB over the last 20% of steps, checked on
a held-then-decayed schedule with a floor of lr x ``lr_final_ratio``), the paired analysis, the table and the
pictures. The arms are registered into its arm table (:func:`benchmarks.nerf_plateau.register_arms`).

Profiles (``--profile``):

- ``cpu`` (default): the ``nerfacto-cpu`` preset (torch hash grid, 2^15-entry tables, 64 + 32 proposal and 32 field
  samples, 256 rays), mic at 100 px (2 paired seeds) and fern at 252 x 189 px (1 seed).
- ``paper``: nerfstudio's nerfacto sizes (4096 rays, 256 + 96 / 48 samples, 2^19-entry tables, tiny-cuda-nn where it
  is installed) on Blender scenes at their files' full resolution, for the first machine with a GPU (the code is
  device-agnostic: it runs unchanged on CUDA). ../shared/data's mic is 200 px; the paper's is 800 px.

Training goes by (scene, seed): the two arms of a pair side by side (one process each, ``--threads`` torch threads,
so both clocks see the same load), in chunks of ``--report-every`` steps; after every chunk the report is rewritten
(``benchmarks/results/nerfacto_plateau.json``: finished runs under ``runs``, partial curves under ``unfinished_runs``;
the Markdown write-up beside it), so an interrupted study leaves its curves behind and the next call continues every
run from its checkpoint.

Run from the repository root: ``python -m benchmarks.nerfacto_plateau --help``. ``--quick`` is a 2-minute smoke on
the generated synthetic scene, writing outside tracked files.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Tuple

import tyro

from benchmarks.common import RESULTS_DIR
from benchmarks.nerf_plateau import (
    ROOT,
    Arm,
    PlateauConfig,
    RunSpec,
    checked_config,
    load_record,
    plateau_specs,
    register_arms,
    report,
    run_dir_of,
    train_all,
)
from benchmarks.nerfacto_cpu import BLENDER_NERFACTO
from nerf_inr_methods import reporting
from nerf_inr_methods.nerfstudio_plugin.presets import NERFACTO_CPU_PRESET
from nerf_inr_methods.reporting import fmt_pm, mean_std

MODULE = "benchmarks.nerfacto_plateau"
"""This module's import name (registered with the arms: the training processes import it)."""

FERN_NERFACTO = {
    "pipeline.model.near_plane": 0.3,
    "pipeline.model.far_plane": 2.0,
    "pipeline.model.disable_scene_contraction": True,
    "pipeline.model.proposal_initial_sampler": "uniform",
    "pipeline.model.camera_optimizer.mode": "off",
}
"""nerfacto on fern as llff-data sets the scene up (Euclidean, no NDC): the planes it reports for fern at scale 0.25
(near 0.300, far 1.984; nerfacto takes planes from its own flags, not from the dataparser), the scene box it reports
covers the sampled region (no contraction), and the held-out views are scored at their given poses (no camera
optimizer)."""

NERFACTO_SETUP = {"mic": BLENDER_NERFACTO, "synthetic": BLENDER_NERFACTO, "fern": FERN_NERFACTO}
"""scene -> nerfacto's set-up there (both arms)."""

NERFACTO_LR_GRID = (5e-3, 1e-2, 2e-2)
"""lr grid of both arms (x2 around nerfacto's 1e-2) for ``--stage tune``."""


def _arm(method: str, preset: str | None, scene_overrides: Dict[str, Dict[str, Any]]) -> Arm:
    return Arm(
        method,
        lr_grid=NERFACTO_LR_GRID,
        default_lr=1e-2,
        preset=preset,
        param_groups=("proposal_networks", "fields"),
        scene_overrides=scene_overrides,
    )


FULL_RESOLUTION = {"pipeline.datamanager.camera_res_scale_factor": 1.0}
PAPER_SETUP = {scene: {**setup, **FULL_RESOLUTION} for scene, setup in NERFACTO_SETUP.items() if scene != "fern"}

NERFACTO_ARMS: Dict[str, Arm] = {
    "nerfacto": _arm("inr-nerfacto", "nerfacto-cpu", NERFACTO_SETUP),
    "int-map-nerfacto": _arm("int-map-nerfacto", "nerfacto-cpu", NERFACTO_SETUP),
    "nerfacto-paper": _arm("inr-nerfacto", None, PAPER_SETUP),
    "int-map-nerfacto-paper": _arm("int-map-nerfacto", None, PAPER_SETUP),
}
"""The study's arms (the ``-paper`` ones: ``--profile paper``)."""
register_arms(NERFACTO_ARMS, MODULE)

PROFILES: Dict[str, Dict[str, Any]] = {
    "cpu": {
        "arms": ("nerfacto", "int-map-nerfacto"),
        "rays": NERFACTO_CPU_PRESET["pipeline.datamanager.train_num_rays_per_batch"],
        "scenes": ("mic", "fern"),
    },
    "paper": {"arms": ("nerfacto-paper", "int-map-nerfacto-paper"), "rays": 4096, "scenes": ("mic",)},
}
"""profile -> its arms (baseline first), rays per step and scenes."""

SCHEDULE: Dict[str, Any] = {"steps": 10000, "hold": 0.48, "decay_end": 0.8, "lr_final_ratio": 0.1}
"""The plateau schedule (nerf_plateau's shape: lr held for 48% of the steps, decayed to lr x 0.1 at 80%, flat
after, where the plateau rule is checked). 10000 steps of 256 rays: pilots of the preset on mic at nerfacto's lr
1e-2 reached 26.1 dB after 1000 steps (vanilla NeRF: 19.5 dB; vanilla plateaus by ~16000 steps of this shape)."""


@dataclass
class NerfactoPlateauConfig(PlateauConfig):
    """nerfacto against int-map-nerfacto at nerfacto's plateau (the nerfacto-cpu preset; --profile paper: GPU sizes)."""

    stage: Literal["tune", "train", "report", "all", "concentration"] = "train"
    """tune: both arms' lr grids (not run yet: the runs train at nerfacto's lr 1e-2 until tuning exists); train: the
    plateau runs (then the report); report: JSON, write-up and pictures; all: the three in order; concentration:
    where each started run's training error sits at its latest checkpoint (``error_concentration``'s measures,
    written beside the results as ``<results>_concentration.json``)."""
    profile: Literal["cpu", "paper"] = "cpu"
    """cpu: the nerfacto-cpu preset at 100 px; paper: nerfacto's own sizes at the files' full resolution (GPU)."""
    scenes: Tuple[str, ...] = ("mic", "fern")
    """Scenes to train (mic, fern, synthetic)."""
    arms: Tuple[str, ...] = ("nerfacto", "int-map-nerfacto")
    """Arms (the profile's arms when left at the cpu default)."""
    baseline: str = "nerfacto"
    """The arm the other is compared with."""
    steps: int = SCHEDULE["steps"]
    """Training steps per run."""
    hold: float = SCHEDULE["hold"]
    """Fraction of the steps at constant lr before the decay starts."""
    decay_end: float = SCHEDULE["decay_end"]
    """Fraction of the steps at which the decay reaches lr * lr_final_ratio (constant from there on)."""
    lr_final_ratio: float = SCHEDULE["lr_final_ratio"]
    """The lr's floor, as a fraction of the lr."""
    rays: int = PROFILES["cpu"]["rays"]
    """Rays per training step."""
    eval_every: int = 500
    """Steps between logged test evaluations (and checkpoints)."""
    tune_steps: int = 1000
    """Horizon of the lr tuning runs (``--stage tune``)."""
    jobs: int = 2
    """Runs trained at once: the two arms of a (scene, seed) pair side by side."""
    threads: int = 1
    """Torch threads per run."""
    report_every: int = 2000
    """Steps between reports while training (a multiple of --eval-every)."""
    output_dir: Path = ROOT / "outputs" / "nerfacto_plateau"
    """Run folders (reused across invocations: this is what makes the study resumable)."""
    results: Path = RESULTS_DIR / "nerfacto_plateau.json"
    """Results JSON (every run's raw curve); the write-up is the .md beside it."""
    plateau_reference: Path | None = None
    """Not used by this study."""


def resolved(config: NerfactoPlateauConfig) -> NerfactoPlateauConfig:
    """``config`` with the quick smoke's or the profile's settings, checked (nerf_plateau's checks)."""
    if config.quick:
        config = dataclasses.replace(
            config,
            scenes=("synthetic",),
            seeds=(0,),
            steps=200,
            eval_every=100,
            report_every=100,
            tune_steps=10,
            tune_scene="synthetic",
            results=config.output_dir / "nerfacto_plateau_quick.json",
            meshes=False,
            quick=False,
        )
    if config.profile != "cpu":
        profile = PROFILES[config.profile]
        config = dataclasses.replace(config, arms=profile["arms"], baseline=profile["arms"][0], rays=profile["rays"])
    if config.report_every < 1 or config.report_every % config.eval_every:
        raise ValueError(
            f"--report-every must be a multiple of --eval-every {config.eval_every}, got {config.report_every}"
        )
    return checked_config(config)  # type: ignore[return-value]


def pairs(specs: List[RunSpec]) -> List[List[RunSpec]]:
    """The specs grouped by (scene, seed), in order: the arms of a pair train side by side."""
    groups: Dict[Tuple[str, int], List[RunSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.scene, spec.seed), []).append(spec)
    return list(groups.values())


def train_pairs(config: NerfactoPlateauConfig) -> None:
    """Train every pair to the end in chunks of ``report_every`` steps, the report rewritten after each chunk."""
    for group in pairs(plateau_specs(config)):
        last = max(spec.steps for spec in group)
        for until in [*range(config.report_every, last, config.report_every), None]:
            if until is not None and all(_reached(spec, config, until) for spec in group):
                continue
            train_all(group, dataclasses.replace(config, until=until))
            write_report(config)


def _reached(spec: RunSpec, config: NerfactoPlateauConfig, step: int) -> bool:
    record = load_record(spec, config.output_dir)
    return bool(record and (record.get("finished") or record["curve"][-1]["step"] >= step))


def write_report(config: NerfactoPlateauConfig) -> Dict[str, Any]:
    """nerf_plateau's report (JSON, table, curves, test views, meshes) under this study's name, plus the write-up."""
    payload = report(config)
    payload["benchmark"] = "nerfacto_plateau"
    payload["summary_line"] = summary_line(config, payload)
    payload["progress"] = progress_rows(payload)
    reporting.write_json(payload, config.results)
    write_up = markdown(config, payload)
    config.results.with_suffix(".md").write_text(write_up)
    print(payload["summary_line"], flush=True)
    return payload


def progress_rows(payload: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every started run's latest logged point: arm, scene, seed, step, wall-clock, test PSNR, finished."""
    rows = []
    for run in [*payload["runs"], *payload["unfinished_runs"]]:
        point = run["curve"][-1]
        rows.append(
            {
                "arm": run["arm"],
                "scene": run["scene"],
                "seed": run["seed"],
                "step": point["step"],
                "steps": run["steps"],
                "train_minutes": point["train_seconds"] / 60,
                "psnr": point["psnr"],
                "finished": bool(run.get("finished")),
                "commit": run.get("commit"),
            }
        )
    return rows


def summary_line(config: NerfactoPlateauConfig, payload: Dict[str, Any]) -> str:
    """One line per scene: the map's paired final-PSNR difference, its verdict and its time to nerfacto's final."""
    parts = []
    for scene, arms in payload["analysis"].items():
        for arm, entry in arms.items():
            if arm == config.baseline:
                continue
            diff = entry["final_psnr_minus_vanilla"]
            times = [r["time_ratio_to_vanilla_final"] for r in entry["per_seed"]]
            reached = [t for t in times if t is not None]
            clock = f"{fmt_pm(*mean_std(reached))}x" if reached else "never"
            parts.append(
                f"{scene} {arm} {fmt_pm(diff['mean'], diff['std'])} dB vs {config.baseline} ({diff['verdict']}), "
                f"{config.baseline}'s final in {clock} its wall-clock ({len(reached)}/{len(times)} seeds)"
            )
    return "SUMMARY nerfacto_plateau: " + ("; ".join(parts) if parts else "no finished pair yet")


def markdown(config: NerfactoPlateauConfig, payload: Dict[str, Any]) -> str:
    """The write-up: set-up, table, per-seed numbers, progress of unfinished runs, pictures."""
    stem = config.results.with_suffix("").name
    lines = [
        "# nerfacto and int-map-nerfacto at nerfacto's plateau",
        "",
        f"Written by `python -m benchmarks.nerfacto_plateau` (`{payload['command']}`); every number below is in "
        f"`{config.results.name}`. Arms: `{config.baseline}` (uniform rays) and the error map, same model, lr, "
        f"schedule and seeds; profile `{config.profile}`, {config.rays} rays per step, {config.steps} steps (lr held "
        f"for {config.hold:.0%}, decayed to lr x {config.lr_final_ratio:g} at {config.decay_end:.0%}, flat after); "
        f"test PSNR on fixed views (mic: every 20th test view; fern: the hold-out views) every {config.eval_every} "
        "steps; wall-clock of training only (evaluation and checkpoints excluded), the two arms of a seed side by "
        f"side at {config.threads} torch thread(s) each on a machine shared with other work: compare the clocks "
        "within a pair, not across pairs.",
        "",
        "lr: "
        + ", ".join(
            f"{arm} {t['lr']:g}" + (" (untuned)" if t.get("untuned") else "") for arm, t in payload["tuning"].items()
        ),
        "",
        "## Results (finished runs)",
        "",
        payload["table"] if payload["runs"] else "No (scene, seed) pair has finished yet.",
        "",
    ]
    for scene, arms in payload["analysis"].items():
        for arm, entry in arms.items():
            rows = [
                [
                    str(r["seed"]),
                    f"{r['final_psnr']:.2f}",
                    f"{r['vanilla_final_psnr']:.2f}",
                    f"{r['final_psnr'] - r['vanilla_final_psnr']:+.2f}",
                    _ratio(r["steps_ratio_to_vanilla_final"]),
                    _ratio(r["time_ratio_to_vanilla_final"]),
                    f"{r['plateau_gain_db']:+.2f}",
                ]
                for r in entry["per_seed"]
            ]
            headers = [
                "seed",
                "final PSNR",
                f"{config.baseline}'s final",
                "difference",
                "steps to it",
                "time to it",
                "gain over last 20%",
            ]
            lines += [f"### {scene}, {arm}: per seed", "", reporting.markdown_table(headers, rows), ""]
    lines += early_training_lines(config, payload)
    progress = payload["progress"]
    if progress:
        rows = [
            [
                p["arm"],
                p["scene"],
                str(p["seed"]),
                f"{p['step']}/{p['steps']}",
                f"{p['train_minutes']:.1f}",
                f"{p['psnr']:.2f}",
                "yes" if p["finished"] else "no",
                str(p["commit"]),
            ]
            for p in progress
        ]
        headers = ["arm", "scene", "seed", "step", "train min", "test PSNR", "finished", "commit"]
        lines += ["## Every run's latest point", "", reporting.markdown_table(headers, rows), ""]
    pictures = [f"{stem}_psnr_vs_time.png", *(f"{stem}_{scene}_test_views.png" for scene in config.scenes)]
    measured = concentration_path(config)
    if measured.is_file():
        rows = [
            [
                r["arm"],
                r["scene"],
                str(r["seed"]),
                str(r["step"]),
                f"{r['top10_share']:.0%}",
                f"{r['gain_ideal']:.2f}",
                f"{r['gain_map']:.2f}",
            ]
            for r in json.loads(measured.read_text())["runs"]
        ]
        headers = ["arm", "scene", "seed", "step", "L1 error in the worst 10% of pixels", "gain ideal", "gain map"]
        lines += [
            "## Where the training error sits (`--stage concentration`, every 8th training image)",
            "",
            "Vanilla NeRF for comparison (`error_concentration_6k.json`, constant lr): mic 72% / 84% / 77% at "
            "2000 / 4000 / 6000 steps (gain ideal 7.6 / 11.2 / 9.2, map 3.9 / 4.6 / 4.3); fern 30-32% (1.7-1.8, 1.4).",
            "",
            reporting.markdown_table(headers, rows),
            "",
        ]
    shown = [p for p in pictures if (config.results.parent / p).is_file()]
    if shown:
        lines += ["## Pictures", "", *(f"![{p}]({p})" for p in shown), ""]
    lines += [payload["summary_line"], ""]
    return "\n".join(lines)


def early_training_lines(config: NerfactoPlateauConfig, payload: Dict[str, Any]) -> List[str]:
    """Per (scene, seed) pair with an unfinished run: both arms' test PSNR and training minutes at every step both
    have logged, and the difference (labelled early training: not a plateau claim)."""
    runs = [*payload["runs"], *payload["unfinished_runs"]]
    lines: List[str] = []
    for scene, seed in dict.fromkeys((r["scene"], r["seed"]) for r in payload["unfinished_runs"]):
        by_arm = {
            r["arm"]: {p["step"]: p for p in r["curve"]} for r in runs if (r["scene"], r["seed"]) == (scene, seed)
        }
        if config.baseline not in by_arm or len(by_arm) < 2:
            continue
        base = by_arm[config.baseline]
        for arm, curve in by_arm.items():
            if arm == config.baseline:
                continue
            rows = [
                [
                    str(step),
                    f"{base[step]['psnr']:.2f}",
                    f"{curve[step]['psnr']:.2f}",
                    f"{curve[step]['psnr'] - base[step]['psnr']:+.2f}",
                    f"{base[step]['train_seconds'] / 60:.1f}",
                    f"{curve[step]['train_seconds'] / 60:.1f}",
                ]
                for step in sorted(set(base) & set(curve))
                if step > 0
            ]
            headers = ["step", f"{config.baseline} PSNR", f"{arm} PSNR", "difference"]
            headers += [f"{config.baseline} train min", f"{arm} train min"]
            title = f"## Early training (runs not finished): {scene}, seed {seed}, {arm} against {config.baseline}"
            lines += [title, "", reporting.markdown_table(headers, rows), ""]
    return lines


def concentration_path(config: NerfactoPlateauConfig) -> Path:
    return config.results.with_name(config.results.stem + "_concentration.json")


def measure_concentration(config: NerfactoPlateauConfig, image_every: int = 8) -> Dict[str, Any]:
    """``benchmarks.error_concentration``'s measures (top-10% share of the L1 error, importance-sampling gains ideal
    and of the error map) on every ``image_every``-th training image of each started run, at its latest checkpoint:
    how concentrated nerfacto's residuals are, i.e. what drawing rays by error can buy there (vanilla NeRF on mic: 77%
    of the L1 error in the worst tenth of the pixels at 6000 steps; fern 32%). Written to
    :func:`concentration_path`."""
    from benchmarks.error_concentration import concentration, pixel_residuals
    from benchmarks.nerf_common import load_eval_views
    from nerf_inr_methods.nerfstudio_plugin.offline import load_run

    rows = []
    for spec in plateau_specs(config):
        record = load_record(spec, config.output_dir)
        if record is None:
            continue
        loaded = load_run(run_dir_of(spec, config.output_dir) / "config.yml")
        pipeline = loaded.pipeline
        views = load_eval_views(pipeline, split="train", every=image_every)
        height, width = (int(size) for size in views.images[0].shape[:2])
        residuals, indices = pixel_residuals(pipeline.model, views)
        rows.append(
            {
                "arm": spec.arm,
                "scene": spec.scene,
                "seed": spec.seed,
                "step": int(loaded.step) + 1,
                **concentration(residuals, indices, height, width, cell=4, uniform_share=0.2),
            }
        )
        print(f"  [{spec.name}] step {rows[-1]['step']}: top 10% hold {rows[-1]['top10_share']:.0%}", flush=True)
    payload = {"command": reporting.command_line(), "commit": reporting.git_commit(), "image_every": image_every}
    reporting.write_json({**payload, "runs": rows}, concentration_path(config))
    return payload


def _ratio(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}x"


def main(config: NerfactoPlateauConfig) -> Dict[str, Any] | None:
    config = resolved(config)
    if config.stage == "concentration":
        return measure_concentration(config)
    if config.stage in ("tune", "all"):
        from benchmarks.nerf_plateau import tune

        tune(config)
    if config.stage in ("train", "all"):
        train_pairs(config)
    if config.stage in ("report", "all", "train"):
        return write_report(config)
    return None


if __name__ == "__main__":
    main(tyro.cli(NerfactoPlateauConfig))
