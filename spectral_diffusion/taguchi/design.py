"""Taguchi designs: factors assigned to the columns of an orthogonal array, with replicates outside it.

``choose_array`` picks the smallest array that holds the factors and keeps the requested interactions
estimable (the linear-graph assignment); ``Design.runs`` lists the jobs to run, row by row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from spectral_diffusion.taguchi.arrays import (
    ARRAY_NAMES,
    AUTO_ARRAY_NAMES,
    OrthogonalArray,
    get_array,
    standard_arrays,
)
from spectral_diffusion.taguchi.errors import DesignError
from spectral_diffusion.utils.validation import is_int

INTERACTION_SIGN = "×"


def interaction_name(first: str, second: str) -> str:
    """The term name of an interaction, e.g. ``A×B``."""
    return f"{first}{INTERACTION_SIGN}{second}"


@dataclass(frozen=True)
class Factor:
    """A controllable factor and its levels (any values: numbers, strings, Hydra override values)."""

    name: str
    levels: tuple

    def __init__(self, name: str, levels: Sequence[Any]) -> None:
        if not isinstance(name, str) or not name or INTERACTION_SIGN in name:
            raise DesignError(f"factor name {name!r} must be a non-empty string without {INTERACTION_SIGN!r}")
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
            raise DesignError(f"factor {name!r}: levels must be a list of values, got {levels!r}")
        levels = tuple(levels)
        if len(levels) < 2:
            raise DesignError(f"factor {name!r} needs at least 2 levels, got {list(levels)}")
        for i in range(len(levels)):
            for j in range(i + 1, len(levels)):
                if levels[i] == levels[j]:
                    raise DesignError(f"factor {name!r} lists level {levels[i]!r} twice: {list(levels)}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "levels", levels)

    @property
    def n_levels(self) -> int:
        return len(self.levels)


class Run(NamedTuple):
    """One job of a design: ``job`` is the run index (row-major: row, then replicate)."""

    job: int
    row: int
    replicate: int
    settings: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Design:
    """Factors on the columns of an orthogonal array (inner array) times replicates (outer array).

    ``columns`` maps each factor to its 0-based column index, ``interactions`` each requested pair to
    the columns that carry its interaction; every other column is an error column.
    ``replicate_labels`` name the replicates (e.g. seeds); a job is one (row, replicate) pair.
    """

    array: OrthogonalArray
    factors: tuple[Factor, ...]
    columns: Mapping[str, int]
    interactions: Mapping[tuple[str, str], tuple[int, ...]]
    replicate_labels: tuple = (0,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "factors", tuple(self.factors))
        object.__setattr__(self, "columns", dict(self.columns))
        object.__setattr__(self, "interactions", {tuple(k): tuple(v) for k, v in self.interactions.items()})
        object.__setattr__(self, "replicate_labels", tuple(self.replicate_labels))
        _check_factor_names(self.factors)
        if not self.replicate_labels:
            raise DesignError("a design needs at least one replicate")
        if len(set(map(repr, self.replicate_labels))) != len(self.replicate_labels):
            raise DesignError(f"replicate labels must be distinct, got {list(self.replicate_labels)}")
        names = [f.name for f in self.factors]
        if sorted(self.columns) != sorted(names):
            raise DesignError(f"every factor needs exactly one column: factors {names}, columns {self.columns}")
        occupant: dict[int, str] = {}
        for factor in self.factors:
            column = self.columns[factor.name]
            if not 0 <= column < self.array.n_columns:
                raise DesignError(f"factor {factor.name!r}: {self.array.name} has no column index {column}")
            if self.array.levels[column] != factor.n_levels:
                raise DesignError(
                    f"factor {factor.name!r} has {factor.n_levels} levels but column "
                    f"{column + 1} of {self.array.name} has {self.array.levels[column]}"
                )
            if column in occupant:
                raise DesignError(f"factors {occupant[column]!r} and {factor.name!r} share column {column + 1}")
            occupant[column] = factor.name
        for (a, b), carried in self.interactions.items():
            expected = self.array.interaction_columns(self.columns[a], self.columns[b])
            if tuple(carried) != expected:
                raise DesignError(
                    f"interaction {interaction_name(a, b)} lives in columns {[c + 1 for c in expected]}, "
                    f"not {[c + 1 for c in carried]}"
                )
            for column in carried:
                if column in occupant:
                    raise DesignError(
                        f"interaction {interaction_name(a, b)} needs column {column + 1} of {self.array.name}, "
                        f"which {occupant[column]!r} occupies: the two would be confounded"
                    )
                occupant[column] = interaction_name(a, b)

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.factors)

    @property
    def interaction_names(self) -> tuple[str, ...]:
        return tuple(interaction_name(a, b) for a, b in self.interactions)

    @property
    def n_rows(self) -> int:
        return self.array.runs

    @property
    def n_replicates(self) -> int:
        return len(self.replicate_labels)

    @property
    def n_jobs(self) -> int:
        return self.n_rows * self.n_replicates

    @property
    def error_columns(self) -> tuple[int, ...]:
        """0-based indices of the columns that hold neither a factor nor a requested interaction."""
        used = set(self.columns.values()) | {c for cols in self.interactions.values() for c in cols}
        return tuple(c for c in range(self.array.n_columns) if c not in used)

    def factor(self, name: str) -> Factor:
        for factor in self.factors:
            if factor.name == name:
                return factor
        raise DesignError(f"no factor named {name!r}; factors are {list(self.factor_names)}")

    def level_indices(self, name: str) -> np.ndarray:
        """Level index (0..s-1) of factor ``name`` in each row."""
        return self.array.matrix[:, self.columns[self.factor(name).name]]

    def settings(self, row: int) -> dict[str, Any]:
        """``{factor: level value}`` of one row."""
        return {f.name: f.levels[self.array.matrix[row, self.columns[f.name]]] for f in self.factors}

    def job(self, row: int, replicate: int) -> int:
        return row * self.n_replicates + replicate

    def row_and_replicate(self, job: int) -> tuple[int, int]:
        if not 0 <= job < self.n_jobs:
            raise DesignError(f"job {job} is outside this design's {self.n_jobs} jobs")
        return divmod(job, self.n_replicates)

    def runs(self) -> list[Run]:
        """Every job, row-major: all replicates of row 0, then of row 1, …"""
        return [
            Run(self.job(row, replicate), row, replicate, self.settings(row))
            for row in range(self.n_rows)
            for replicate in range(self.n_replicates)
        ]

    def column_assignment(self) -> list[tuple[int, str]]:
        """``(1-based column number, what it holds)`` for every column: a factor, an interaction or error."""
        holder = {column: name for name, column in self.columns.items()}
        for (a, b), carried in self.interactions.items():
            holder.update({c: interaction_name(a, b) for c in carried})
        return [(c + 1, holder.get(c, "error")) for c in range(self.array.n_columns)]

    def to_csv(self, path: str | Path) -> Path:
        """Write ``design.csv``: job, row, replicate, replicate_label, each factor's level value and,
        in ``<factor>_level``, its level index."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = self.factor_names
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["job", "row", "replicate", "replicate_label", *names, *(f"{n}_level" for n in names)])
            for run in self.runs():
                level_indices = [int(self.array.matrix[run.row, self.columns[n]]) for n in names]
                writer.writerow(
                    [run.job, run.row, run.replicate, self.replicate_labels[run.replicate]]
                    + [run.settings[n] for n in names]
                    + level_indices
                )
        return path


def _check_factor_names(factors: Sequence[Factor]) -> None:
    if not factors:
        raise DesignError("a design needs at least one factor")
    for factor in factors:
        if not isinstance(factor, Factor):
            raise DesignError(f"expected Factor(name, levels), got {factor!r}")
    names = [f.name for f in factors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DesignError(f"factor names must be distinct; repeated: {duplicates}")


def _normalize_interactions(
    factors: Sequence[Factor], interactions: Iterable[Sequence[str]]
) -> list[tuple[str, str]]:
    order = {f.name: i for i, f in enumerate(factors)}
    pairs: list[tuple[str, str]] = []
    for pair in interactions:
        if isinstance(pair, str) or len(pair) != 2:
            raise DesignError(f"an interaction is a pair of factor names, e.g. ('A', 'B'); got {pair!r}")
        for name in pair:
            if name not in order:
                raise DesignError(f"interaction {tuple(pair)} names unknown factor {name!r}; factors: {list(order)}")
        a, b = sorted(pair, key=order.__getitem__)
        if a == b:
            raise DesignError(f"interaction {tuple(pair)} pairs factor {a!r} with itself")
        if (a, b) in pairs:
            raise DesignError(f"interaction {interaction_name(a, b)} is requested twice")
        pairs.append((a, b))
    return pairs


def _replicate_labels(replicates: int | Sequence[Any]) -> tuple:
    if is_int(replicates):
        if replicates < 1:
            raise DesignError(f"replicates={replicates} must be at least 1")
        return tuple(range(int(replicates)))
    if isinstance(replicates, (str, bytes)) or not isinstance(replicates, Sequence) or not replicates:
        raise DesignError(f"replicates must be a count or a non-empty list of labels (e.g. seeds), got {replicates!r}")
    return tuple(replicates)


def _level_shortfall(array: OrthogonalArray, factors: Sequence[Factor]) -> str | None:
    """Why the array's columns cannot hold the factors' level counts, or None if they can."""
    available = array.level_counts()
    needed: dict[int, list[str]] = {}
    for factor in factors:
        needed.setdefault(factor.n_levels, []).append(factor.name)
    for n_levels, names in sorted(needed.items()):
        have = available.get(n_levels, 0)
        if have == 0:
            holders = [a.name for a in standard_arrays() if n_levels in a.levels]
            where = f"arrays with {n_levels}-level columns: {', '.join(holders)}" if holders else (
                f"no array here has {n_levels}-level columns ({', '.join(a.describe_capacity() for a in standard_arrays())})"
            )
            return (
                f"factor {names[0]!r} has {n_levels} levels but {array.describe_capacity()} has no "
                f"{n_levels}-level column; {where}"
            )
        if have < len(names):
            return (
                f"{array.describe_capacity()} has {have} column(s) with {n_levels} levels but {len(names)} "
                f"factors with {n_levels} levels were given ({', '.join(names)})"
            )
    return None


def _assign_columns(
    array: OrthogonalArray,
    factors: Sequence[Factor],
    interactions: Sequence[tuple[str, str]],
    fixed_columns: Mapping[str, int],
) -> tuple[dict[str, int], dict[tuple[str, str], tuple[int, ...]]] | str:
    """The linear-graph assignment: factors to columns so that the interaction columns of every
    requested pair hold no factor and no other interaction. Returns the assignment or why none exists.

    Factors in interactions are placed first by depth-first search over columns in ascending order
    (so the first assignment found is the lexicographically smallest), the others take the lowest
    free columns. Without fixed columns the first two interacting factors go to columns 1 and 2
    without loss of generality: the collineations of PG(m-1, q) act 2-transitively on the columns of
    a Rao–Hamming array and map interaction columns to interaction columns.
    """
    shortfall = _level_shortfall(array, factors)
    if shortfall:
        return shortfall
    by_name = {f.name: f for f in factors}
    for name, column in fixed_columns.items():
        if not 0 <= column < array.n_columns:
            return f"factor {name!r}: {array.name} has columns 1..{array.n_columns}, not {column + 1}"
        if array.levels[column] != by_name[name].n_levels:
            return (
                f"factor {name!r} has {by_name[name].n_levels} levels but column {column + 1} of "
                f"{array.name} has {array.levels[column]}"
            )
    taken = [n for n in fixed_columns if list(fixed_columns.values()).count(fixed_columns[n]) > 1]
    if taken:
        return f"factors {taken} are all given column {fixed_columns[taken[0]] + 1}"
    if interactions:
        if not array.has_interaction_table:
            return (
                f"{array.name} cannot keep interaction {interaction_name(*interactions[0])} estimable: "
                f"its interactions are spread over all other columns ({array.construction.split(':')[0]})"
            )
        per_interaction = array.galois_field.order - 1
        needed = len(factors) + per_interaction * len(interactions)
        if needed > array.n_columns:
            return (
                f"{array.name} has {array.n_columns} columns but factors {', '.join(f.name for f in factors)} "
                f"and interaction(s) {', '.join(interaction_name(*p) for p in interactions)} "
                f"({per_interaction} column(s) each) need {needed}"
            )

    interacting = [f.name for f in factors if any(f.name in pair for pair in interactions)]
    occupant = {column: name for name, column in fixed_columns.items() if name not in interacting}
    assignment: dict[str, int] = {}
    reserved: dict[int, str] = {}
    collisions: list[str] = []

    def place(k: int) -> bool:
        if k == len(interacting):
            return True
        name = interacting[k]
        if name in fixed_columns:
            candidates: Iterable[int] = [fixed_columns[name]]
        elif not fixed_columns and k < 2:
            candidates = [k]
        else:
            candidates = range(array.n_columns)
        for column in candidates:
            if column in occupant or column in reserved or column in assignment.values():
                continue
            assignment[name] = column
            new_reserved: dict[int, str] = {}
            ok = True
            for a, b in interactions:
                if name in (a, b) and a in assignment and b in assignment:
                    for carried in array.interaction_columns(assignment[a], assignment[b]):
                        holder = occupant.get(carried) or reserved.get(carried) or new_reserved.get(carried)
                        holder = holder or next((n for n, c in assignment.items() if c == carried), None)
                        if holder:
                            ok = False
                            collisions.append(
                                f"interaction {interaction_name(a, b)} needs column {carried + 1}, "
                                f"which {holder!r} occupies"
                            )
                            break
                        new_reserved[carried] = interaction_name(a, b)
                if not ok:
                    break
            if ok:
                reserved.update(new_reserved)
                if place(k + 1):
                    return True
                for carried in new_reserved:
                    del reserved[carried]
            del assignment[name]
        return False

    if not place(0):
        detail = f" (e.g. {collisions[0]})" if collisions else ""
        return (
            f"no assignment of {', '.join(interacting)} to the columns of {array.name} keeps the interaction "
            f"columns of {', '.join(interaction_name(*p) for p in interactions)} free of factors and of each "
            f"other{detail}"
        )
    columns = dict(assignment)
    for name in (f.name for f in factors if f.name not in interacting):
        if name in fixed_columns:
            if fixed_columns[name] in reserved:
                return (
                    f"factor {name!r} is given column {fixed_columns[name] + 1}, which carries interaction "
                    f"{reserved[fixed_columns[name]]}: the two would be confounded"
                )
            columns[name] = fixed_columns[name]
    for factor in factors:
        if factor.name in columns:
            continue
        used = set(columns.values()) | set(reserved) | set(occupant)
        free = [c for c in range(array.n_columns) if c not in used and array.levels[c] == factor.n_levels]
        if not free:
            return f"{array.name} has no free {factor.n_levels}-level column left for factor {factor.name!r}"
        columns[factor.name] = free[0]
    carried = {pair: array.interaction_columns(columns[pair[0]], columns[pair[1]]) for pair in interactions}
    return {f.name: columns[f.name] for f in factors}, carried


def choose_array(
    factors: Sequence[Factor],
    interactions: Iterable[Sequence[str]] = (),
    array: str = "auto",
    replicates: int | Sequence[Any] = 1,
    column_numbers: Mapping[str, int] | None = None,
) -> Design:
    """The design on the smallest orthogonal array that holds ``factors`` and keeps ``interactions``
    (pairs of factor names) estimable, trying ``AUTO_ARRAY_NAMES`` in order (L12 only by name); or on
    the named ``array`` (``"L8"``…), if it can. A factor needs a column with exactly its number of levels.

    ``replicates`` is a count or a list of labels (e.g. seeds) forming the outer array.
    ``column_numbers`` optionally pins factors to columns by Taguchi's 1-based column numbers, as read
    off a linear graph; the others are assigned automatically. A ``DesignError`` says what does not fit
    and which array would.
    """
    factors = list(factors)
    _check_factor_names(factors)
    pairs = _normalize_interactions(factors, interactions)
    labels = _replicate_labels(replicates)
    fixed: dict[str, int] = {}
    for name, number in (column_numbers or {}).items():
        if name not in {f.name for f in factors}:
            raise DesignError(f"column_numbers names unknown factor {name!r}")
        if not is_int(number):
            raise DesignError(f"column_numbers[{name!r}]={number!r} must be a 1-based column number")
        fixed[name] = int(number) - 1

    if array == "auto":
        reasons = []
        for candidate in (get_array(name) for name in AUTO_ARRAY_NAMES):
            result = _assign_columns(candidate, factors, pairs, fixed)
            if isinstance(result, str):
                reasons.append(result)
                continue
            columns, carried = result
            return Design(candidate, tuple(factors), columns, carried, labels)
        needs = ", ".join(f"{f.name} ({f.n_levels} levels)" for f in factors)
        wanted = f" with interactions {', '.join(interaction_name(*p) for p in pairs)}" if pairs else ""
        why = "".join(f"\n  - {reason}" for reason in reasons)
        raise DesignError(f"no orthogonal array of this library holds {needs}{wanted} (L12 is only used by name):{why}")
    if array not in ARRAY_NAMES:
        raise DesignError(f"unknown orthogonal array {array!r}; choose 'auto' or one of {list(ARRAY_NAMES)}")
    result = _assign_columns(get_array(array), factors, pairs, fixed)
    if isinstance(result, str):
        try:
            alternative = choose_array(factors, pairs, "auto", labels, column_numbers).array.name
            hint = f"; {alternative} would fit"
        except DesignError:
            pinned = " with these column numbers" if column_numbers else ""
            hint = f"; no array of this library fits these factors and interactions{pinned}"
        raise DesignError(result + hint)
    columns, carried = result
    return Design(get_array(array), tuple(factors), columns, carried, labels)
