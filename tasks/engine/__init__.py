"""The numerical core: curvature and sharpness of a trained network, as plain functions.

Importing this package is cheap and torch-free (the gateway reads the measure registry from
it); the estimators live in submodules that import torch: problem, operator, lanczos, trace,
density, sharpness. A researcher uses them directly from a notebook.
"""
