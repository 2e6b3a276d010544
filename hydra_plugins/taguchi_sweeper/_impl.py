"""The Taguchi sweeper's work: factors from config or command line, validation by composing every
job's config before launching, the jobs through Hydra's launcher, then the analysis in the sweep folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

from spectral_diffusion.taguchi import SN_TYPES, Design, DesignError, Factor, choose_array
from spectral_diffusion.taguchi.sweep_folder import (
    CONFIRMATION_FILE,
    DESIGN_FILE,
    MISSING_POLICY_OF,
    AUTO_SN,
    OBJECTIVE,
    RESULTS_FILE,
    SWEEP_SN_TYPES,
    JobResult,
    SweepSpec,
    read_interval,
    read_response,
    relative_output_dir,
    response_direction,
    write_analysis,
    write_confirmation_csv,
    write_design_csv,
    write_results_csv,
)
from spectral_diffusion.utils.validation import ConfigError

log = logging.getLogger(__name__)

PREFIX = "hydra.sweeper"
SEED_KEY = "seed"
_BARE_STRING = re.compile(r"^[A-Za-z_][A-Za-z0-9_./\-]*$")
_HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}


class SweepAborted(RuntimeError):
    """A job failed and ``on_failure=abort``: no further jobs ran and nothing was analysed."""


def override_value(value: Any) -> str:
    """A level as Hydra override text: bare words and numbers as they are, other strings quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if _BARE_STRING.match(value) and value.lower() not in _HYDRA_WORDS:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"{PREFIX}.factors: level {value!r} cannot be written as a Hydra override")


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


@dataclass(frozen=True)
class Plan:
    """Everything decided before any job runs."""

    spec: SweepSpec
    base_overrides: tuple[str, ...]
    seeds: tuple[int, ...]


class TaguchiSweeperImpl:
    def __init__(
        self,
        factors: Any,
        array: str,
        interactions: Any,
        replicates: Any,
        response: str,
        sn: str,
        on_failure: str,
        confirm: int,
        fixed: Any,
        max_batch_size: int | None,
    ) -> None:
        self.factors = _plain(factors) or {}
        self.array = array
        self.interactions = _plain(interactions) or []
        self.replicates = _plain(replicates)
        self.response = response
        self.sn = sn
        self.on_failure = on_failure
        self.confirm = confirm
        self.fixed = list(_plain(fixed) or [])
        self.max_batch_size = max_batch_size
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # --- planning and validation (nothing runs, nothing is written) ------------------------------
    def _check_settings(self) -> None:
        if self.sn not in SWEEP_SN_TYPES:
            raise ConfigError(f"{PREFIX}.sn={self.sn!r} is not allowed; choose one of {list(SWEEP_SN_TYPES)}")
        if self.on_failure not in MISSING_POLICY_OF:
            raise ConfigError(f"{PREFIX}.on_failure={self.on_failure!r} is not allowed; choose one of "
                              f"{list(MISSING_POLICY_OF)}")
        if isinstance(self.confirm, bool) or not isinstance(self.confirm, int) or self.confirm < 0:
            raise ConfigError(f"{PREFIX}.confirm={self.confirm!r} must be a count of runs >= 0")
        if self.max_batch_size is not None and (not isinstance(self.max_batch_size, int) or self.max_batch_size < 1):
            raise ConfigError(f"{PREFIX}.max_batch_size={self.max_batch_size!r} must be null or an integer >= 1")
        if not isinstance(self.response, str) or not self.response:
            raise ConfigError(f"{PREFIX}.response={self.response!r} must name a key of metrics.json, e.g. objective")
        if self.sn == AUTO_SN and self.response != OBJECTIVE and response_direction(self.response) is None:
            raise ConfigError(f"{PREFIX}.sn=auto cannot tell which way {PREFIX}.response={self.response!r} improves "
                              f"(a ratio, a count, or a key without a direction in "
                              f"spectral_diffusion/evaluation/names.py); set {PREFIX}.sn to one of {list(SN_TYPES)}")

    def _seeds(self) -> tuple[int, ...]:
        replicates = self.replicates
        if isinstance(replicates, int) and not isinstance(replicates, bool):
            if replicates < 1:
                raise ConfigError(f"{PREFIX}.replicates={replicates} must be at least 1")
            return tuple(range(replicates))
        if isinstance(replicates, list) and replicates and all(
            isinstance(s, int) and not isinstance(s, bool) for s in replicates
        ):
            if len(set(replicates)) != len(replicates):
                raise ConfigError(f"{PREFIX}.replicates={replicates} lists a seed twice")
            return tuple(replicates)
        raise ConfigError(f"{PREFIX}.replicates={replicates!r} must be a count or a non-empty list of integer seeds")

    def _parse(self, arguments: Sequence[str]) -> tuple[dict[str, list[Any]], list[str]]:
        """(factors, plain overrides): command-line choice sweeps replace the configured factors."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        swept: dict[str, list[Any]] = {}
        plain: list[str] = []
        for override in parser.parse_overrides(list(arguments)):
            if not override.is_sweep_override():
                plain.append(override.input_line)
                continue
            if not override.is_discrete_sweep():
                raise ConfigError(
                    f"{override.input_line}: the Taguchi sweeper takes factors as lists of levels "
                    "(key=a,b or key=choice(a,b)), not ranges or intervals"
                )
            if override.is_add() or override.is_delete() or override.is_force_add():
                raise ConfigError(f"{override.input_line}: a factor must be an existing key, without + ++ or ~")
            swept[override.get_key_element()] = list(override.sweep_iterator())
        if swept:
            log.info("Factors from the command line replace %s.factors: %s", PREFIX, list(swept))
            return swept, plain
        if not isinstance(self.factors, dict) or not self.factors:
            raise ConfigError(f"{PREFIX}.factors is empty: give override key -> list of levels")
        factors = {}
        for key, levels in self.factors.items():
            if not isinstance(levels, list):
                raise ConfigError(f"{PREFIX}.factors.{key}={levels!r} must be a list of levels")
            if re.match(r"^[+~]", key):
                raise ConfigError(f"{PREFIX}.factors: {key!r} must be an existing key, without + ++ or ~")
            factors[key] = levels
        return factors, plain

    def _interaction_pairs(self, names: Sequence[str]) -> list[tuple[str, str]]:
        letters = {chr(ord("A") + i): name for i, name in enumerate(names)}
        pairs = []
        for entry in self.interactions:
            pair = re.split(r"[×*,]", entry) if isinstance(entry, str) else entry
            if not isinstance(pair, list) or len(pair) != 2:
                raise ConfigError(f"{PREFIX}.interactions: {entry!r} must be a pair of factors, e.g. [A, B]")
            resolved = []
            for item in pair:
                item = str(item).strip()
                if item in names:
                    resolved.append(item)
                elif item in letters:
                    resolved.append(letters[item])
                else:
                    raise ConfigError(f"{PREFIX}.interactions: {item!r} is not a factor; factors are "
                                      f"{list(names)} (or letters {list(letters)})")
            pairs.append(tuple(resolved))
        return pairs

    def _compose(self, overrides: Sequence[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _check_factor_keys(self, factors: dict[str, list[Any]], base: Sequence[str]) -> None:
        """Compose the config once per level: a key or option that does not exist is an error here,
        and so is a level that a later override would overwrite (an inert factor)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        base_keys = {o.key_or_group: o.input_line for o in parser.parse_overrides(list(base))}
        if SEED_KEY in base_keys:
            raise ConfigError(f"{base_keys[SEED_KEY]}: the seed is set by {PREFIX}.replicates (a count or a list "
                              "of seeds); remove it from the overrides")
        for key, levels in factors.items():
            if key in base_keys:
                raise ConfigError(f"factor {key!r} is also fixed by {base_keys[key]!r}: a factor cannot be both")
            for level in levels:
                override = f"{key}={override_value(level)}"
                try:
                    cfg = self._compose([*base, override])
                except Exception as error:  # Hydra's composition errors name the missing key or option
                    raise ConfigError(f"{PREFIX}.factors: {override} cannot be applied to the config: {error}") from None
                self._check_level_reached(cfg, key, level, override)

    @staticmethod
    def _check_level_reached(cfg: DictConfig, key: str, level: Any, override: str) -> None:
        choices = cfg.hydra.runtime.choices
        if key in choices:
            reached = choices[key]
            ok = str(reached) == str(level)
        else:
            reached = _plain(OmegaConf.select(cfg, key, throw_on_missing=False))
            ok = reached == level
        if not ok:
            raise ConfigError(f"factor {key!r}: after {override} the composed config has {key}={reached!r}; "
                              "another override overwrites the level, so the factor would be inert")

    def plan(self, arguments: Sequence[str]) -> Plan:
        self._check_settings()
        seeds = self._seeds()
        factors, plain = self._parse(arguments)
        base = tuple(self.fixed) + tuple(plain)
        names = list(factors)
        try:
            design = choose_array(
                [Factor(name, levels) for name, levels in factors.items()],
                self._interaction_pairs(names),
                self.array,
                seeds,
            )
        except DesignError as error:
            raise ConfigError(f"{PREFIX}: {error}") from None
        self._check_factor_keys(factors, base)
        overrides = tuple(self._job_overrides(design, base, run.row, seeds[run.replicate]) for run in design.runs())
        for job, job_overrides in enumerate(overrides):
            cfg = self._compose(job_overrides)
            row, replicate = design.row_and_replicate(job)
            for name, level in design.settings(row).items():
                self._check_level_reached(cfg, name, level, f"{name}={override_value(level)}")
            if job == 0 and self.response == OBJECTIVE and cfg.get("optimized_metric") is None:
                raise ConfigError(f"{PREFIX}.response=objective but optimized_metric is null: set optimized_metric "
                                  "or name a key of metrics.json as the response")
        spec = SweepSpec(design, self.response, self.sn, self.on_failure, overrides,
                         {"fixed": list(self.fixed), "arguments": list(plain), "confirm": self.confirm})
        return Plan(spec, base, seeds)

    @staticmethod
    def _job_overrides(design: Design, base: Sequence[str], row: int, seed: int) -> tuple[str, ...]:
        levels = [f"{name}={override_value(value)}" for name, value in design.settings(row).items()]
        return (*base, *levels, f"{SEED_KEY}={seed}")

    # --- running ----------------------------------------------------------------------------------
    def _outcome(self, job: int, row: int, replicate: int, seed: Any, ret: JobReturn, sweep_dir: Path) -> JobResult:
        output_dir = (
            Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) if ret.hydra_cfg is not None else sweep_dir / str(job)
        )
        folder = relative_output_dir(sweep_dir, output_dir)
        if ret.status != JobStatus.COMPLETED:
            error = ret._return_value  # the task's exception; return_value would re-raise it
            return JobResult(job, row, replicate, seed, "failed", None, folder, f"{type(error).__name__}: {error}")
        status, value, reason = read_response(output_dir, self.response)
        return JobResult(job, row, replicate, seed, status, value, folder, reason,
                         read_interval(output_dir, self.response))

    def _launch(self, batch: list[tuple[int, Sequence[str]]]) -> Sequence[JobReturn]:
        returns = self.launcher.launch([list(o) for _, o in batch], initial_job_idx=batch[0][0])
        if len(returns) != len(batch):
            raise RuntimeError(f"the launcher returned {len(returns)} results for {len(batch)} jobs")
        return returns

    def _batches(self, n_jobs: int) -> list[list[int]]:
        jobs = list(range(n_jobs))
        # A response other than the objective is checked on the first job before the others start.
        first = [jobs[:1]] if self.response != OBJECTIVE else []
        rest = jobs[len(first):]
        size = self.max_batch_size or max(len(rest), 1)
        return first + [rest[i:i + size] for i in range(0, len(rest), size)]

    def sweep(self, arguments: list[str]) -> Any:
        plan = self.plan(arguments)
        spec, design = plan.spec, plan.spec.design
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        spec.save(sweep_dir)
        write_design_csv(sweep_dir / DESIGN_FILE, spec)
        log.info("Taguchi sweep: %s, %d rows x %d replicate(s) = %d jobs; design in %s",
                 design.array.name, design.n_rows, design.n_replicates, design.n_jobs, sweep_dir / DESIGN_FILE)

        results: list[JobResult] = []
        returns: list[Sequence[JobReturn]] = []
        for batch_jobs in self._batches(design.n_jobs):
            batch = [(job, spec.overrides[job]) for job in batch_jobs]
            batch_returns = self._launch(batch)
            returns.append(batch_returns)
            for job, ret in zip(batch_jobs, batch_returns):
                row, replicate = design.row_and_replicate(job)
                outcome = self._outcome(job, row, replicate, plan.seeds[replicate], ret, sweep_dir)
                results.append(outcome)
                if job == 0 and outcome.status == "missing_response" and self.response != OBJECTIVE:
                    write_results_csv(sweep_dir / RESULTS_FILE, spec, results)
                    raise ConfigError(f"{PREFIX}.response={self.response!r}: {outcome.error}; no other job was run")
            write_results_csv(sweep_dir / RESULTS_FILE, spec, results)
            failed = [r for r in results if r.status != "ok"]
            if failed and self.on_failure == "abort":
                first = failed[0]
                raise SweepAborted(
                    f"job {first.job} (row {first.row}, seed {first.seed}, folder {first.output_dir}) {first.status}: "
                    f"{first.error}. on_failure=abort: no further jobs were launched and nothing was analysed "
                    f"({len(results)} of {design.n_jobs} jobs in {sweep_dir / RESULTS_FILE}); set "
                    f"{PREFIX}.on_failure=record to analyse with the failure recorded"
                )

        result, _ = write_analysis(sweep_dir, spec, results)
        log.info("Taguchi analysis written to %s; best levels %s", sweep_dir / "analysis.md", result.best_levels)
        if self.confirm:
            returns.append(self._confirm(plan, result.best_levels, results, sweep_dir))
        return returns

    def _confirm(self, plan: Plan, best: dict[str, Any], results: list[JobResult], sweep_dir: Path) -> Sequence[JobReturn]:
        """Run the predicted optimum with ``confirm`` fresh seeds and add the comparison to the analysis."""
        spec, design = plan.spec, plan.spec.design
        start = max(plan.seeds) + 1
        seeds = list(range(start, start + self.confirm))
        levels = [f"{name}={override_value(best[name])}" for name in design.factor_names]
        batch = [(design.n_jobs + i, (*plan.base_overrides, *levels, f"{SEED_KEY}={seed}")) for i, seed in enumerate(seeds)]
        returns = self._launch(batch)
        confirmation = [
            self._outcome(job, -1, i, seed, ret, sweep_dir)
            for i, ((job, _), seed, ret) in enumerate(zip(batch, seeds, returns))
        ]
        write_confirmation_csv(sweep_dir / CONFIRMATION_FILE, spec, best, confirmation)
        write_analysis(sweep_dir, spec, results, best, confirmation)
        log.info("Confirmation runs: %s", [r.value for r in confirmation])
        return returns
