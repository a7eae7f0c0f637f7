"""What installing the package changes in nerfstudio: one list, each item installed, each switchable off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from nerf_inr_methods.nerfstudio_plugin import patches


def test_every_patch_is_installed_with_the_plugin() -> None:
    import nerf_inr_methods.nerfstudio_plugin.method_configs  # noqa: F401 (what nerfstudio's entry points import)

    assert patches.install() == [p.name for p in patches.PATCHES]
    assert getattr(yaml.load, "_nerf_inr_methods_safe", False)
    assert getattr(torch.load, "_nerf_inr_methods_safe", False)
    assert getattr(np.load, "_nerf_inr_methods_safe", False)
    import torchmetrics.image.lpip as lpip_module
    from nerfstudio.data.dataparsers import colmap_dataparser

    from nerf_inr_methods.nerfstudio_plugin import file_guards, offline

    assert lpip_module.LearnedPerceptualImagePatchSimilarity is offline.LazyLPIPS
    assert colmap_dataparser.run_command is file_guards.run_without_shell


def test_patches_are_documented_and_switchable(monkeypatch: pytest.MonkeyPatch) -> None:
    for patch in patches.PATCHES:
        assert f"\n{patch.name} " in patches.__doc__, patch.name
    monkeypatch.setenv(patches.OFF_VARIABLE, "lpips, warnings")
    assert patches.switched_off() == {"lpips", "warnings"}
    assert "lpips" not in patches.install()
    monkeypatch.setenv(patches.OFF_VARIABLE, "all")
    assert patches.install() == []
    monkeypatch.setenv(patches.OFF_VARIABLE, "lpips,nonsense")
    with pytest.raises(ValueError, match="NIM_PATCHES_OFF: unknown patch nonsense"):
        patches.switched_off()
