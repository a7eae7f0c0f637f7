"""``python -m nerf_inr_methods.nerfstudio_plugin.compare`` = ``inr-compare``."""

from nerf_inr_methods.nerfstudio_plugin.compare.cli import entrypoint

entrypoint()
