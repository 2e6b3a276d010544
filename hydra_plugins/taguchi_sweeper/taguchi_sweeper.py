"""The ``taguchi`` sweeper as Hydra sees it: its config dataclass in the ConfigStore and a thin class.

Hydra imports this module while scanning for plugins, so the heavy imports wait in ``_impl``.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


def _default_factors() -> Dict[str, Any]:
    # The project's default L8 (README, Taguchi sweeps): A noise gaussian/equalized, B frequency attention off/on, C sampler
    # DDIM/DPM-Solver++ 2M, D loss, E optimizer. Each factor changes what is computed
    # (tests/test_taguchi_sweeper.py).
    return {
        "noise": ["gaussian", "equalized"],
        "model.freq_attention": [False, True],
        "sampler": ["ddim", "dpm_solver_pp"],
        "loss": ["mse", "frequency_balanced"],
        "optimizer": ["adam", "adaptive"],
    }


def _default_fixed() -> List[str]:
    # About 1.5 to 2.5 minutes per job on a 2-core CPU; both samplers get the same number of steps.
    return [
        "trainer.max_steps=1000",
        "trainer.val_check_interval=500",
        "scheduler.warmup_steps=100",
        "sampler.steps=50",
        "evaluation.num_samples=500",
        "callbacks.model_checkpoint.every_n_train_steps=1000",
        "callbacks.sample_grid.every_n_steps=1000",
        "trainer.enable_progress_bar=false",
    ]


@dataclass
class TaguchiSweeperConf:
    _target_: str = "hydra_plugins.taguchi_sweeper.taguchi_sweeper.TaguchiSweeper"
    # Hydra override key -> levels (config-group options or values). Sweep overrides on the command
    # line (`noise/schedule=cosine,linear`) replace this mapping as a whole.
    factors: Dict[str, Any] = field(default_factory=_default_factors)
    # "auto" (the smallest array that fits) or a name: L4 L8 L9 L12 L16 L16b L18 L25 L27.
    array: str = "auto"
    # Pairs of factors (override keys or letters A, B, ... in factor order) to keep estimable.
    interactions: List[Any] = field(default_factory=list)
    # A count n (seeds 0..n-1) or a list of seeds; each replicate runs with `seed=<value>`.
    replicates: Any = 1
    # A key of each job's metrics.json; `objective` is the run's optimized_metric.
    response: str = "objective"
    # auto (the way the response improves: larger_is_better for the default objective, recognisability;
    # smaller_is_better for fid) | smaller_is_better | larger_is_better | nominal_is_best_mean_var | nominal_is_best_var
    sn: str = "auto"
    # abort: stop at the first failed batch; record: keep going, analyse with least-squares fills.
    on_failure: str = "record"
    # Confirmation runs at the predicted optimum after the analysis (0 = none).
    confirm: int = 0
    # Overrides applied to every job before the factor levels (command-line overrides come after).
    fixed: List[str] = field(default_factory=_default_fixed)
    # Jobs handed to the launcher at once (null = all); abort stops between batches.
    max_batch_size: Optional[int] = None


ConfigStore.instance().store(group="hydra/sweeper", name="taguchi", node=TaguchiSweeperConf, provider="spectral_diffusion")


class TaguchiSweeper(Sweeper):
    """Runs the rows of an orthogonal array (times replicate seeds) through Hydra's launcher, then
    writes design.csv, results.csv, analysis.md, plots and TensorBoard into the sweep folder."""

    def __init__(
        self,
        factors: Dict[str, Any],
        array: str,
        interactions: List[Any],
        replicates: Any,
        response: str,
        sn: str,
        on_failure: str,
        confirm: int,
        fixed: List[str],
        max_batch_size: Optional[int],
    ) -> None:
        from hydra_plugins.taguchi_sweeper._impl import TaguchiSweeperImpl

        self.impl = TaguchiSweeperImpl(
            factors=factors,
            array=array,
            interactions=interactions,
            replicates=replicates,
            response=response,
            sn=sn,
            on_failure=on_failure,
            confirm=confirm,
            fixed=fixed,
            max_batch_size=max_batch_size,
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from spectral_diffusion.cli import full_error_requested, report_user_error
        from spectral_diffusion.utils.validation import ConfigError

        try:
            return self.impl.sweep(arguments)
        except ConfigError as error:
            # A sweep the config rejects (before any job, or a response no job writes) is a user error:
            # one message, as for a single run; HYDRA_FULL_ERROR=1 keeps the traceback.
            if full_error_requested():
                raise
            raise SystemExit(report_user_error("sd-train", error)) from None
