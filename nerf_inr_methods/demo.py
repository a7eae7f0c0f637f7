"""``python -m nerf_inr_methods.demo``: what a trained run learned, as things to look at (the end of ``./run.sh demo``).

From a run's ``config.yml`` (any Blender-format run of our methods or nerfstudio's vanilla-nerf), writes into
``--output-dir``:

- ``eval.json``: metrics over every test view, as ``ns-eval`` writes them (with ``--baseline-config``, the second
  run's under ``"baseline"``);
- ``test_views.png``: a few test views, ground truth beside the render (and the baseline's render, with
  ``--baseline-config``), each captioned with its PSNR;
- ``turntable.gif``: the trained scene on a full orbit around the world's z axis (Blender scenes are z-up and
  centred at the origin), starting at the first test camera, at the training resolution;
- ``mesh.ply``: ``inr-mesh`` with its default settings, and ``mesh_views.png``: the mesh drawn from the cameras of
  the views in ``test_views.png`` (flat-shaded triangles with the mesh's vertex colours);
- ``summary.txt``: the one-screen summary it prints, whose last lines are the files' paths.

Example::

    python -m nerf_inr_methods.demo --load-config outputs/demo/synthetic-demo/int-map-nerf/demo/config.yml \\
        --baseline-config outputs/demo/synthetic-demo/inr-nerf/demo/config.yml --output-dir outputs/demo
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import tyro

from nerf_inr_methods.cli import check_output_dir, check_positive, exit_on_bad_input
from nerf_inr_methods.nerfstudio_plugin.presets import matching_preset


@dataclass
class TestView:
    """One rendered test view: images (H, W, 3) in [0, 1] and the model's own metrics of it."""

    index: int
    """Index of the view in the test split."""
    ground_truth: np.ndarray
    """Test image with the model's background blended in (H, W, 3)."""
    render: np.ndarray
    """The model's render (fine network for vanilla-NeRF-style models) (H, W, 3)."""
    psnr: float
    """PSNR of the render (dB), as ns-eval computes it."""


def spread_indices(count: int, total: int) -> List[int]:
    """``count`` indices spread evenly over ``range(total)``, starting at 0 (fewer if ``total`` is smaller)."""
    if total < 1:
        raise ValueError("the test split has no views")
    count = min(count, total)
    return sorted({int(i * total / count) for i in range(count)})


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """The model in evaluation mode (deterministic ray samples), its previous mode restored afterwards.

    nerfstudio's ``get_average_eval_image_metrics`` leaves the model in training mode, where vanilla NeRF's samples
    along a ray are jittered: a render after it would differ from ns-eval's by up to ~0.7 dB on a view."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def render_test_views(pipeline: Any, indices: Sequence[int]) -> List[TestView]:
    """Render test views ``indices`` with the model's evaluation path (``get_image_metrics_and_images``) in
    evaluation mode."""
    import torch

    model, dataset = pipeline.model, pipeline.datamanager.eval_dataset
    views = []
    with torch.no_grad(), eval_mode(model):
        for index in indices:
            camera = dataset.cameras[index : index + 1].to(model.device)
            batch = dataset[index]
            outputs = model.get_outputs_for_camera(camera)
            metrics, _ = model.get_image_metrics_and_images(outputs, batch)
            render = outputs["rgb_fine"] if "rgb_fine" in outputs else outputs["rgb"]
            target = model.renderer_rgb.blend_background(batch["image"].to(model.device))
            views.append(
                TestView(
                    index=int(index),
                    ground_truth=target[..., :3].clamp(0, 1).cpu().numpy(),
                    render=render[..., :3].clamp(0, 1).cpu().numpy(),
                    psnr=float(metrics["psnr"]),
                )
            )
    return views


def save_test_views(
    views: Sequence[TestView],
    path: Path,
    title: str,
    baseline_views: Sequence[TestView] | None = None,
    names: Tuple[str, str] = ("", ""),
) -> Path:
    """One panel per view, ground truth (left) beside the render (right), captioned with the view's PSNR.

    With ``baseline_views`` (the same views rendered by a second run), each panel is ground truth | render |
    baseline's render, captioned with both PSNRs under ``names`` (the run's and the baseline's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 3 if baseline_views is not None else 2
    fig, axes = plt.subplots(1, len(views), figsize=(1.8 * columns * len(views), 2.6), squeeze=False)
    for k, (ax, view) in enumerate(zip(axes[0], views, strict=True)):
        gap = np.ones((view.render.shape[0], max(1, view.render.shape[1] // 32), 3))
        images = [view.ground_truth, gap, view.render]
        caption = f"test view {view.index}: PSNR {view.psnr:.2f} dB"
        if baseline_views is not None:
            base = baseline_views[k]
            images += [gap, base.render]
            caption = f"test view {view.index}, PSNR\n{names[0]} {view.psnr:.2f} dB | {names[1]} {base.psnr:.2f} dB"
        ax.imshow(np.concatenate(images, axis=1), interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def orbit_cameras(camera: Any, num_frames: int) -> Any:
    """``num_frames`` copies of ``camera`` (a 1-camera nerfstudio ``Cameras``) rotated about the world z axis
    through the origin, evenly over one turn (a turntable of a z-up scene centred at the origin)."""
    import torch
    from nerfstudio.cameras.cameras import Cameras

    angles = torch.arange(num_frames, dtype=torch.float32) * (2.0 * math.pi / num_frames)
    cos, sin = torch.cos(angles), torch.sin(angles)
    rotations = torch.zeros(num_frames, 3, 3)
    rotations[:, 0, 0], rotations[:, 0, 1], rotations[:, 1, 0], rotations[:, 1, 1] = cos, -sin, sin, cos
    rotations[:, 2, 2] = 1.0
    camera_to_world = rotations @ camera.camera_to_worlds.reshape(1, 3, 4).cpu().float()
    repeat = lambda t: t.reshape(1, -1).expand(num_frames, -1).clone()  # noqa: E731
    return Cameras(
        camera_to_worlds=camera_to_world,
        fx=repeat(camera.fx.cpu()),
        fy=repeat(camera.fy.cpu()),
        cx=repeat(camera.cx.cpu()),
        cy=repeat(camera.cy.cpu()),
        width=repeat(camera.width.cpu()),
        height=repeat(camera.height.cpu()),
        camera_type=repeat(camera.camera_type.cpu()),
    )


def render_frames(pipeline: Any, cameras: Any) -> List[np.ndarray]:
    """RGB renders (H, W, 3) uint8 of every camera, with the model's evaluation path in evaluation mode."""
    import torch

    model = pipeline.model
    frames = []
    with torch.no_grad(), eval_mode(model):
        for i in range(cameras.shape[0]):
            outputs = model.get_outputs_for_camera(cameras[i : i + 1].to(model.device))
            rgb = outputs["rgb_fine"] if "rgb_fine" in outputs else outputs["rgb"]
            frames.append((rgb[..., :3].clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8))
    return frames


def save_gif(frames: Sequence[np.ndarray], path: Path, fps: float) -> Path:
    """Looping GIF of ``frames`` (H, W, 3) uint8 at ``fps`` frames per second."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000.0 / fps), loop=0)
    return path


def model_from_dataset_coordinates(pipeline: Any) -> np.ndarray:
    """(4, 4) matrix from the dataset's coordinates (``inr-mesh``'s default output) to the model's: the
    dataparser's ``x_model = scale * (transform @ [x, 1])``."""
    outputs = pipeline.datamanager.train_dataparser_outputs
    forward = np.eye(4)
    forward[:3, :] = outputs.dataparser_transform.detach().cpu().double().numpy()
    return np.diag([outputs.dataparser_scale] * 3 + [1.0]) @ forward


def draw_mesh(ax: Any, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, camera: Any, scale: float) -> int:
    """Draw a triangle mesh as seen by a pinhole ``camera`` (nerfstudio, OpenGL convention) on ``ax``.

    Painter's algorithm (far triangles first), each triangle flat-shaded: its vertex colours' mean (N, 3) in [0, 1]
    times ``0.3 + 0.7 |cos|`` of the angle between its normal and the view ray. ``vertices`` (V, 3) are in the
    camera's world (model) coordinates; ``scale`` multiplies the image size. Returns the triangles drawn.
    """
    from matplotlib.collections import PolyCollection

    camera_to_world = camera.camera_to_worlds.reshape(3, 4).cpu().double().numpy()
    rotation, origin = camera_to_world[:, :3], camera_to_world[:, 3]
    fx, fy = float(camera.fx) * scale, float(camera.fy) * scale
    cx, cy = float(camera.cx) * scale, float(camera.cy) * scale
    width, height = int(camera.width) * scale, int(camera.height) * scale
    in_camera = (vertices - origin) @ rotation  # x right, y up, looking down -z
    depth = -in_camera[:, 2]
    pixels = np.stack([cx + fx * in_camera[:, 0] / depth, cy - fy * in_camera[:, 1] / depth], axis=-1)
    visible = np.all(depth[faces] > 1e-6, axis=1)
    faces, colors = faces[visible], colors[visible]
    corners = vertices[faces]  # (F, 3, 3)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True).clip(1e-12)
    rays = corners.mean(axis=1) - origin
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True).clip(1e-12)
    shade = 0.3 + 0.7 * np.abs(np.sum(normals * rays, axis=-1))
    order = np.argsort(-depth[faces].mean(axis=1))
    facecolors = (colors[order] * shade[order, None]).clip(0, 1)
    ax.add_collection(
        PolyCollection(pixels[faces[order]], facecolors=facecolors, edgecolors=facecolors, linewidths=0.2)
    )
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.set_facecolor("white")
    ax.set_xticks([])
    ax.set_yticks([])
    return len(faces)


def load_mesh_for_drawing(
    mesh_path: Path, to_model: np.ndarray | None = None
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices (V, 3) mapped by ``to_model`` (4, 4) when given, faces (F, 3), face colours (F, 3) in [0, 1]: the
    mean of their vertex colours, light grey without them) of a mesh file, as :func:`draw_mesh` takes them."""
    import trimesh

    mesh = trimesh.load(mesh_path, process=False, force="mesh")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if to_model is not None:
        vertices = vertices @ to_model[:3, :3].T + to_model[:3, 3]
    faces = np.asarray(mesh.faces, dtype=np.int64)
    vertex_colors = getattr(mesh.visual, "vertex_colors", None)
    if vertex_colors is not None and len(vertex_colors) == len(vertices):
        colors = np.asarray(vertex_colors, dtype=np.float64)[:, :3][faces].mean(axis=1) / 255.0
    else:
        colors = np.full((len(faces), 3), 0.75)
    return vertices, faces, colors


def save_mesh_views(
    mesh_path: Path, to_model: np.ndarray, cameras: Sequence[Any], indices: Sequence[int], path: Path
) -> Path:
    """The mesh drawn from each of ``cameras`` (the test views ``indices``), side by side, at 4x the image size.

    ``to_model`` (4, 4) maps the mesh's coordinates to the cameras' (:func:`model_from_dataset_coordinates`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vertices, faces, colors = load_mesh_for_drawing(mesh_path, to_model)
    fig, axes = plt.subplots(1, len(cameras), figsize=(3.0 * len(cameras), 3.2), squeeze=False)
    for ax, camera, index in zip(axes[0], cameras, indices, strict=True):
        draw_mesh(ax, vertices, faces, colors, camera, scale=4)
        ax.set_title(f"mesh from test view {index}", fontsize=10)
    fig.suptitle(f"{mesh_path.name}: {len(vertices)} vertices, {len(faces)} faces", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def fields_schedule(config: Any) -> Tuple[str, str, Dict[str, Any]]:
    """The fields group's optimizer and scheduler configs of a run, with the ns-train flags that select them:
    (switch, flag prefix, {"optimizer", "scheduler"}): ("", "--optimizers.fields", ...) for ``--optimizer
    configured`` (or a plain TrainerConfig), else e.g. ("--optimizer adam", "--optimizer-presets.adam", ...)."""
    from nerf_inr_methods.nerfstudio_plugin.esgd_trainer import resolved_group

    choice = getattr(config, "optimizer", "configured")
    steps = getattr(config, "max_num_iterations", None)
    if choice == "configured":
        return "", "--optimizers.fields", resolved_group(config.optimizers.get("fields", {}), steps)
    group = resolved_group(config.optimizer_presets.get(choice, {}), steps)
    return f"--optimizer {choice}", f"--optimizer-presets.{choice}", group


def schedule_text(config: Any) -> str:
    """The fields optimizer and lr schedule of a run's config, e.g. ``RAdam lr 0.001 -> 1e-05 (exponential)``."""
    _, _, group = fields_schedule(config)
    optimizer, scheduler = group.get("optimizer"), group.get("scheduler")
    if optimizer is None:
        return f"--optimizer {getattr(config, 'optimizer', '?')}"
    name = type(optimizer).__name__.replace("OptimizerConfig", "")
    final = getattr(scheduler, "lr_final", None)
    if final is None or final == optimizer.lr:
        return f"{name} lr {optimizer.lr:g} (constant)"
    hold = getattr(scheduler, "warmup_steps", 0) if getattr(scheduler, "lr_pre_warmup", None) == optimizer.lr else 0
    held = f" for {hold} steps, then" if hold else ""
    return f"{name} lr {optimizer.lr:g}{held} -> {final:g} (exponential decay)"


def schedule_flags(config: Any) -> str:
    """ns-train flags that repeat a run's fields optimizer and lr schedule, e.g. ``--optimizer adam
    --optimizer-presets.adam.optimizer.lr 0.001 --optimizer-presets.adam.scheduler.lr-final 0.0001``."""
    switch, prefix, group = fields_schedule(config)
    optimizer, scheduler = group.get("optimizer"), group.get("scheduler")
    if optimizer is None:
        return switch
    flags = [switch, f"{prefix}.optimizer.lr {optimizer.lr:g}"]
    if getattr(scheduler, "lr_final", None) is not None:
        flags.append(f"{prefix}.scheduler.lr-final {scheduler.lr_final:g}")
        if getattr(scheduler, "warmup_steps", 0):
            flags.append(f"{prefix}.scheduler.warmup-steps {scheduler.warmup_steps}")
            flags.append(f"{prefix}.scheduler.lr-pre-warmup {scheduler.lr_pre_warmup:g}")
    return " ".join(flag for flag in flags if flag)


def training_seconds(run_dir: Path) -> float | None:
    """Training time of the run (sum of its logged step durations, evaluations excluded), or None if not logged."""
    from nerf_inr_methods.nerfstudio_plugin.compare.logs import read_training_log

    return read_training_log(run_dir).train_seconds


def data_of(config: Any) -> Path | None:
    """The dataset folder a run was trained on (``--data`` of ns-train or of its dataparser)."""
    datamanager = config.pipeline.datamanager
    return datamanager.data or getattr(getattr(datamanager, "dataparser", None), "data", None)


def next_commands(config: Any, steps: int, baseline_trained: bool = False) -> List[str]:
    """Commands to try next: the comparison with vanilla NeRF (trained first unless ``baseline_trained``), then
    real data."""
    schedule = schedule_flags(config)
    preset = matching_preset(config)
    sizes = f"$(python -m nerf_inr_methods.nerfstudio_plugin.presets {preset})" if preset else "<the run's size flags>"
    experiment_dir = Path(config.output_dir) / config.experiment_name
    compare = f"inr-compare --runs {experiment_dir} --output-dir {experiment_dir / 'comparison'}"
    if baseline_trained:
        commands = [
            "# both runs compared on the same test views (PSNR, SSIM, time; verdicts need several seeds):",
            compare,
        ]
    else:
        commands = [
            "# the same training with vanilla NeRF, then both compared on the same test views:",
            f"ns-train inr-nerf {sizes} --max-num-iterations {steps} \\\n"
            f"      {schedule.strip()} --vis tensorboard --output-dir {config.output_dir} \\\n"
            f"      --experiment-name {config.experiment_name} --timestamp vanilla \\\n"
            f"      blender-data --data {data_of(config)}",
            compare,
        ]
    return commands + [
        "# real data (README, Training on your data): python data_scripts/download.py blender --out data, then",
        f"ns-train {config.method_name} $(python -m nerf_inr_methods.nerfstudio_plugin.presets) "
        "blender-data --data data/blender/lego",
    ]


@dataclass
class Demo:
    """Show what a trained run learned: test views beside ground truth, a turntable GIF, a mesh and its picture."""

    load_config: Path
    """The run's config.yml (written by ns-train)."""
    baseline_config: Path | None = None
    """A second run's config.yml on the same data (the demo: vanilla NeRF, inr-nerf): evaluated on every test view
    and drawn beside the run in test_views.png."""
    output_dir: Path = Path("outputs/demo")
    """Folder for eval.json, test_views.png, turntable.gif, mesh.ply, mesh_views.png and summary.txt."""
    num_views: int = 3
    """Test views in test_views.png and mesh_views.png (spread evenly over the test split)."""
    turntable_frames: int = 24
    """Frames of the turntable GIF (one full turn)."""
    turntable_fps: float = 12.0
    """Frames per second of the turntable GIF."""
    mesh: bool = True
    """Extract mesh.ply with inr-mesh's default settings and draw mesh_views.png."""
    fallback_occupancy: float = 0.05
    """When the default density level finds no surface (an under-trained field), mesh the densest this fraction of
    the box instead (inr-mesh --occupancy), and say so."""

    def check_flags(self) -> None:
        """Refuse bad flags before loading anything (ValueError naming the flag)."""
        from nerf_inr_methods.nerfstudio_plugin.export_mesh import check_load_config

        check_load_config(self.load_config)
        if self.baseline_config is not None:
            check_load_config(self.baseline_config)
        check_output_dir(self.output_dir, "--output-dir")
        check_positive(self.num_views, "--num-views", 1)
        check_positive(self.turntable_frames, "--turntable-frames", 2)
        check_positive(self.turntable_fps, "--turntable-fps", 0.1, integer=False)

    def main(self) -> Dict[str, Path]:
        """Evaluate, render, mesh; print the summary; returns the written files by name."""
        self.check_flags()
        from nerf_inr_methods.nerfstudio_plugin.export_mesh import ExportMesh
        from nerf_inr_methods.nerfstudio_plugin.offline import load_run

        start = time.perf_counter()
        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        config_path = Path(self.load_config)
        run = load_run(config_path, test_mode="test")
        config, pipeline, checkpoint, step = run.config, run.pipeline, run.checkpoint, run.step
        files: Dict[str, Path] = {}

        baseline = None
        if self.baseline_config is not None:
            baseline = self.evaluate_baseline(pipeline)
        print(f"demo: evaluating {config.method_name} on every test view", flush=True)
        metrics = pipeline.get_average_eval_image_metrics(get_std=True)
        eval_json = {
            "experiment_name": config.experiment_name,
            "method_name": config.method_name,
            "checkpoint": str(checkpoint),
            "results": metrics,
        }
        if baseline is not None:
            eval_json["baseline"] = {key: baseline[key] for key in ("method_name", "checkpoint", "results")}
        files["metrics"] = out / "eval.json"
        files["metrics"].write_text(json.dumps(eval_json, indent=2))

        dataset = pipeline.datamanager.eval_dataset
        indices = spread_indices(self.num_views, len(dataset))
        views = render_test_views(pipeline, indices)
        if baseline is None:
            title = f"ground truth (left) | {config.method_name} after {step + 1} steps (right)"
            files["test views"] = save_test_views(views, out / "test_views.png", title)
        else:
            names = (config.method_name, baseline["method_name"])
            title = f"ground truth | {names[0]} | {names[1]}, after {step + 1} / {baseline['step'] + 1} steps"
            files["test views"] = save_test_views(
                views, out / "test_views.png", title, render_test_views(baseline["pipeline"], indices), names
            )
            del baseline["pipeline"]

        print(f"demo: rendering a {self.turntable_frames}-frame turntable", flush=True)
        orbit = orbit_cameras(dataset.cameras[indices[0] : indices[0] + 1], self.turntable_frames)
        files["turntable"] = save_gif(render_frames(pipeline, orbit), out / "turntable.gif", self.turntable_fps)
        cameras = [dataset.cameras[i : i + 1] for i in indices]
        to_model = model_from_dataset_coordinates(pipeline)
        del pipeline  # inr-mesh loads the run again

        mesh_note = None
        if self.mesh:
            print("demo: extracting the mesh (inr-mesh, default settings)", flush=True)
            try:
                files["mesh"] = ExportMesh(load_config=config_path, output_path=out / "mesh.ply").main()
            except ValueError as error:  # an under-trained field never reaches the default density level
                mesh_note = (
                    f"inr-mesh's default level found no surface ({error}); written with "
                    f"--occupancy {self.fallback_occupancy:g} instead (the densest {self.fallback_occupancy:.0%} "
                    "of the box): train longer for a mesh at the default level"
                )
                print(f"demo: {mesh_note}", flush=True)
                files["mesh"] = ExportMesh(
                    load_config=config_path, output_path=out / "mesh.ply", occupancy=self.fallback_occupancy
                ).main()
            files["mesh views"] = save_mesh_views(files["mesh"], to_model, cameras, indices, out / "mesh_views.png")

        files["summary"] = out / "summary.txt"
        seconds = training_seconds(run.run_dir)
        summary = self.summary(
            config, step, metrics, seconds, time.perf_counter() - start, files, mesh_note, baseline=baseline
        )
        files["summary"].write_text(summary + "\n")
        print(summary, flush=True)
        return files

    def evaluate_baseline(self, like: Any) -> Dict[str, Any]:
        """Load the ``--baseline-config`` run and evaluate it on every test view: {"method_name", "checkpoint",
        "step", "schedule", "results" (metrics), "train_seconds", "pipeline"}; refused if its test split differs in
        size from that of ``like`` (the run's pipeline)."""
        from nerf_inr_methods.nerfstudio_plugin.offline import load_run

        run = load_run(Path(self.baseline_config), test_mode="test")
        if len(run.pipeline.datamanager.eval_dataset) != len(like.datamanager.eval_dataset):
            raise ValueError(
                f"--baseline-config: {self.baseline_config} has {len(run.pipeline.datamanager.eval_dataset)} test "
                f"views, the run {len(like.datamanager.eval_dataset)}: expected a run on the same data"
            )
        print(f"demo: evaluating {run.config.method_name} (baseline) on every test view", flush=True)
        return {
            "method_name": run.config.method_name,
            "checkpoint": str(run.checkpoint),
            "step": run.step,
            "schedule": schedule_text(run.config),
            "results": run.pipeline.get_average_eval_image_metrics(get_std=True),
            "train_seconds": training_seconds(run.run_dir),
            "pipeline": run.pipeline,
        }

    def summary(
        self,
        config: Any,
        step: int,
        metrics: Dict[str, float],
        train_seconds: float | None,
        demo_seconds: float,
        files: Dict[str, Path],
        mesh_note: str | None = None,
        baseline: Dict[str, Any] | None = None,
    ) -> str:
        """The one-screen summary: what was trained, how well (beside the baseline when given), the next commands,
        then the files' paths."""
        model = config.pipeline.model
        sizes = f"{config.pipeline.datamanager.train_num_rays_per_batch} rays/step"
        if getattr(model, "iga", False):
            sizes = f"IGA end {model.iga_end}, " + sizes
        if hasattr(model, "num_coarse_samples"):
            sizes += f", {model.num_coarse_samples}+{model.num_importance_samples} samples/ray"
        trained = f"{train_seconds:.0f} s training" if train_seconds is not None else "training time not logged"
        ssim = metrics.get("fine_ssim", metrics.get("ssim", float("nan")))
        lines = [
            "",
            f"=== {config.method_name} demo: what it learned " + "=" * 40,
            f"  method     {config.method_name} on {data_of(config)}, {sizes}",
            f"  training   {step + 1} steps, {schedule_text(config)}; {trained} (renders + mesh: {demo_seconds:.0f} s)",
            f"  test views PSNR {metrics['psnr']:.2f} dB (std {metrics.get('psnr_std', float('nan')):.2f}), "
            f"SSIM {ssim:.3f}  (every test view, as ns-eval)",
        ]
        if baseline is not None:
            base = baseline["results"]
            base_ssim = base.get("fine_ssim", base.get("ssim", float("nan")))
            base_trained = baseline.get("train_seconds")
            base_time = f"; {base_trained:.0f} s training" if base_trained is not None else ""
            lines.append(
                f"  baseline   {baseline['method_name']}, {baseline['step'] + 1} steps, {baseline['schedule']}"
                f"{base_time}: PSNR {base['psnr']:.2f} dB, SSIM {base_ssim:.3f}; {config.method_name} "
                f"{metrics['psnr'] - base['psnr']:+.2f} dB (one seed of a short run; converged, paired-seed numbers: "
                "benchmarks/README.md)"
            )
        if mesh_note:
            lines.append(f"  mesh       {mesh_note}")
        lines.append("  next")
        lines += [f"    {command}" for command in next_commands(config, step + 1, baseline is not None)]
        lines.append("  files")
        lines += [f"    {name:<11} {path}" for name, path in files.items()]
        return "\n".join(lines)


def entrypoint() -> None:
    """``python -m nerf_inr_methods.demo``."""
    command = tyro.cli(Demo, description=__doc__)
    exit_on_bad_input("demo", command.main)


if __name__ == "__main__":
    entrypoint()
