"""nerfstudio adapters: methods, dataparsers, trainer.

Deliberately free of nerfstudio imports: nerfstudio imports ``dataparser_specs`` while its own modules are
half-loaded. The offline fixes (``offline.install``) are installed by ``method_configs`` and the model modules; the
third-party warning filters here, the earliest moment a plugin runs in ``ns-train``.
"""

from nerf_inr_methods.nerfstudio_plugin.warning_filters import filter_third_party_warnings

filter_third_party_warnings()
