"""Hydra sweeper plugin ``hydra/sweeper=taguchi``: orthogonal-array sweeps of sd-train with S/N analysis.

Hydra finds it by scanning the ``hydra_plugins`` namespace package; the work is in ``_impl``.
"""
