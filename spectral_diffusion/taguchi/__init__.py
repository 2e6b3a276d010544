"""Taguchi design of experiments without Hydra: orthogonal arrays, designs, S/N analysis and reports.

Modules: ``arrays`` and ``fields`` (orthogonal arrays), ``design`` (factors and runs), ``signal_to_noise``,
``analysis`` (``analyze``: validate, summarise rows, analyse), ``linear_model`` (model matrices, missing
values), ``anova`` (pooling, F tests, contribution), ``prediction`` (the optimum and its interval),
``results`` (the dataclasses ``analyze`` returns), ``report`` and ``sweep_folder``.

The Hydra sweeper plugin only translates overrides into ``Factor``s and job results into ``analyze``.
"""

from spectral_diffusion.taguchi.analysis import ANOVA_QUANTITIES, MISSING_POLICIES, analyze
from spectral_diffusion.taguchi.anova import PoolingRule
from spectral_diffusion.taguchi.arrays import (
    ARRAY_NAMES,
    AUTO_ARRAY_NAMES,
    OrthogonalArray,
    get_array,
    is_orthogonal,
    standard_arrays,
)
from spectral_diffusion.taguchi.design import Design, Factor, Run, choose_array, interaction_name
from spectral_diffusion.taguchi.errors import DesignError, MissingRunsError
from spectral_diffusion.taguchi.fields import GaloisField
from spectral_diffusion.taguchi.report import analysis_markdown, plot_interaction, plot_main_effects
from spectral_diffusion.taguchi.results import (
    AnovaRow,
    AnovaTable,
    InteractionEffect,
    MissingJob,
    MissingRunReport,
    Prediction,
    ResponseTable,
    TaguchiResult,
)
from spectral_diffusion.taguchi.signal_to_noise import (
    SN_TYPES,
    larger_is_better,
    nominal_is_best_mean_var,
    nominal_is_best_var,
    signal_to_noise,
    smaller_is_better,
)

__all__ = [
    "ANOVA_QUANTITIES",
    "ARRAY_NAMES",
    "AUTO_ARRAY_NAMES",
    "MISSING_POLICIES",
    "SN_TYPES",
    "AnovaRow",
    "AnovaTable",
    "Design",
    "DesignError",
    "Factor",
    "GaloisField",
    "InteractionEffect",
    "MissingJob",
    "MissingRunReport",
    "MissingRunsError",
    "OrthogonalArray",
    "PoolingRule",
    "Prediction",
    "ResponseTable",
    "Run",
    "TaguchiResult",
    "analysis_markdown",
    "analyze",
    "choose_array",
    "get_array",
    "interaction_name",
    "is_orthogonal",
    "larger_is_better",
    "nominal_is_best_mean_var",
    "nominal_is_best_var",
    "plot_interaction",
    "plot_main_effects",
    "signal_to_noise",
    "smaller_is_better",
    "standard_arrays",
]
