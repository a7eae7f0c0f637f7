"""Standalone SDF/occupancy shape trainer (``inr-shape``): data, metrics, training, CLI.

Public entry points: :func:`nerf_inr_methods.shapes.train.run_fit` / :func:`train_shape` with a
:class:`nerf_inr_methods.shapes.config.ShapeFitConfig`, and the ``inr-shape`` console script.
"""
