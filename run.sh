#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./run.sh demo    set up, render the bundled synthetic scene, train int-map-nerf and vanilla NeRF (inr-nerf) on it
#                    side by side (demo preset), evaluate both, render test views and a turntable, extract a mesh
#                    (all in outputs/demo/)
#   ./run.sh test    set up, run the test suite
#   ./run.sh setup   only create/update the virtual environment
# Demo knobs (environment): DEMO_STEPS (4200), DEMO_BASELINE=0 (skip vanilla NeRF), DEMO_SCENE and DEMO_OUT (folders),
# NIM_SKIP_SETUP=1 (use the venv as is).
# The venv is .venv/ at the repository root (override with NIM_VENV=/path); it is reused when present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${NIM_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
TORCH_VERSION="2.14.1"
EIGEN_DIR="/usr/include/eigen3"

say() { printf '\033[1m[run.sh]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[run.sh] error:\033[0m %s\n' "$*" >&2; exit 1; }

ensure_eigen() {
  # pysdf is source-only; its setup.py mis-detects Debian's Eigen 3.4 unless the include dir is given.
  [ -f "$EIGEN_DIR/Eigen/Core" ] && return 0
  local sudo=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else
      die "pysdf needs the Eigen headers ($EIGEN_DIR). Install them first: 'sudo apt-get install libeigen3-dev' (Debian/Ubuntu) or your system's eigen3 package, then run this again."
    fi
  fi
  command -v apt-get >/dev/null || die "pysdf needs the Eigen headers in $EIGEN_DIR and this is not a Debian/Ubuntu system: install eigen3 with your package manager (CPLUS_INCLUDE_PATH must reach Eigen/Core)."
  say "installing libeigen3-dev (needed to build pysdf)"
  $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq libeigen3-dev >/dev/null \
    || die "apt-get install libeigen3-dev failed; install it by hand and run this again."
}

ensure_libusb() {
  # open3d (ns-export pointcloud/poisson/tsdf) loads libusb-1.0.so.0; optional: warn instead of failing the set-up.
  if ldconfig -p 2>/dev/null | grep -q 'libusb-1\.0\.so\.0'; then return 0; fi
  local sudo=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else
      say "ns-export needs libusb (open3d loads libusb-1.0.so.0): run 'sudo apt-get install libusb-1.0-0' (Debian/Ubuntu) or install your system's libusb 1.0 package"
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    say "ns-export needs libusb (open3d loads libusb-1.0.so.0): install your system's libusb 1.0 package"
    return 0
  fi
  say "installing libusb-1.0-0 (open3d, used by ns-export, needs it)"
  { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq libusb-1.0-0 >/dev/null; } \
    || say "apt-get install libusb-1.0-0 failed; ns-export will not work until it is installed"
}

setup() {
  local stamp_file="$VENV/.nerf-inr-methods-installed"
  local stamp
  ensure_libusb
  stamp="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $ROOT"
  if [ -x "$PY" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    return 0
  fi
  command -v python3 >/dev/null || die "python3 (3.10 or newer) is required"
  if [ ! -x "$PY" ]; then
    say "creating virtual environment in $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
  fi
  local start=$SECONDS
  "$PY" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  say "installing torch $TORCH_VERSION and nerfstudio (several GB on first run)"
  "$PY" -m pip install -q "torch==$TORCH_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
  if ! "$PY" -c "import pysdf" 2>/dev/null; then
    ensure_eigen
    say "building pysdf"
    CPLUS_INCLUDE_PATH="$EIGEN_DIR${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}" "$PY" -m pip install -q pysdf==0.1.9 \
      2>&1 | grep -v "^WARNING: Location" || true
    "$PY" -c "import pysdf" 2>/dev/null || die "pysdf did not build; see the pip output above"
  fi
  "$PY" -m pip install -q -e "$ROOT[test]" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import nerf_inr_methods, nerfstudio, pysdf, mcubes, trimesh" || die "installation incomplete"
  echo "$stamp" > "$stamp_file"
  say "environment ready in $((SECONDS - start)) s ($(du -sh "$VENV" 2>/dev/null | cut -f1))"
}

demo() {
  local scene="${DEMO_SCENE:-$ROOT/data/synthetic-demo}" out="${DEMO_OUT:-$ROOT/outputs/demo}"
  local method="int-map-nerf" baseline="inr-nerf" with_baseline=1 threads
  [ "${DEMO_BASELINE:-1}" = 0 ] && with_baseline=0
  local run_dir="$out/synthetic-demo/$method/demo" base_dir="$out/synthetic-demo/$baseline/demo"
  [ -f "$scene/transforms_train.json" ] || "$PY" "$ROOT/data_scripts/make_synthetic_scene.py" --out-dir "$scene"
  rm -rf "$run_dir" "$base_dir"  # a previous demo's checkpoints and logs would be read as this run's
  mkdir -p "$out"
  # Adam 5e-3 held for 60% of the steps, then exponential decay to 3e-4 (the shape of the converged comparison's
  # schedules; chosen on this scene: benchmarks/results/demo.md); the demo preset is the CPU preset with 16 + 16
  # samples per ray. Both runs share the schedule, the seed and the data: they differ only in how rays are drawn.
  local steps="${DEMO_STEPS:-4200}" hold
  hold=$(( steps * 6 / 10 ))
  train() {
    # shellcheck disable=SC2046
    "$VENV/bin/ns-train" "$1" $("$PY" -m nerf_inr_methods.nerfstudio_plugin.presets demo) \
      --max-num-iterations "$steps" --optimizer adam \
      --optimizer-presets.adam.optimizer.lr 5e-3 --optimizer-presets.adam.scheduler.lr-final 3e-4 \
      --optimizer-presets.adam.scheduler.lr-pre-warmup 5e-3 --optimizer-presets.adam.scheduler.warmup-steps "$hold" \
      --vis tensorboard --output-dir "$out" --timestamp demo --experiment-name synthetic-demo \
      --steps-per-eval-image 500 --steps-per-eval-all-images 100000 \
      blender-data --data "$scene"
  }
  if [ "$with_baseline" = 1 ]; then
    # side by side, each on half the cores (two 1-thread runs use 2 cores better than one 2-thread run after another)
    threads=$(( $(nproc 2>/dev/null || echo 2) / 2 )); [ "$threads" -ge 1 ] || threads=1
    say "training $method and, beside it, vanilla NeRF ($baseline) on the synthetic scene (a few minutes on 2 cores;"
    say "  the vanilla run's log: $out/$baseline-training.log)"
    OMP_NUM_THREADS="$threads" train "$baseline" >"$out/$baseline-training.log" 2>&1 &
    DEMO_BASELINE_PID=$!
    trap 'kill "$DEMO_BASELINE_PID" 2>/dev/null || true' EXIT  # stop it when the demo stops early
    OMP_NUM_THREADS="$threads" train "$method"
    wait "$DEMO_BASELINE_PID" || die "training $baseline failed: see $out/$baseline-training.log"
    trap - EXIT
  else
    say "training $method on the synthetic scene with the demo preset (a few minutes on 2 cores)"
    train "$method"
  fi
  say "evaluating, rendering a turntable and extracting a mesh"
  if [ "$with_baseline" = 1 ]; then
    "$PY" -m nerf_inr_methods.demo --load-config "$run_dir/config.yml" --baseline-config "$base_dir/config.yml" \
      --output-dir "$out"
  else
    "$PY" -m nerf_inr_methods.demo --load-config "$run_dir/config.yml" --output-dir "$out"
  fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
  setup) setup ;;
  demo) [ "${NIM_SKIP_SETUP:-}" = 1 ] || setup; demo "$@" ;;
  test) setup; cd "$ROOT"; exec "$PY" -m pytest "$@" ;;
  *) echo "usage: ./run.sh {demo|test|setup} [pytest args]" >&2; exit 2 ;;
esac
