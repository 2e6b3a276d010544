"""Tests for the Taguchi library: generated orthogonal arrays, designs, S/N ratios, ANOVA and reports.

Numbers are checked against hand derivations written out in comments and against a published table.
"""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest

from spectral_diffusion.taguchi import (
    ARRAY_NAMES,
    Design,
    DesignError,
    Factor,
    GaloisField,
    MissingRunsError,
    PoolingRule,
    analysis_markdown,
    analyze,
    choose_array,
    get_array,
    is_orthogonal,
    larger_is_better,
    nominal_is_best_mean_var,
    nominal_is_best_var,
    plot_interaction,
    plot_main_effects,
    signal_to_noise,
    smaller_is_better,
)
from spectral_diffusion.taguchi.prediction import prediction_leverage

# name: (runs, {levels: number of columns})
EXPECTED_SHAPES = {
    "L4": (4, {2: 3}),
    "L8": (8, {2: 7}),
    "L9": (9, {3: 4}),
    "L12": (12, {2: 11}),
    "L16": (16, {2: 15}),
    "L16b": (16, {4: 5}),
    "L18": (18, {2: 1, 3: 7}),
    "L25": (25, {5: 6}),
    "L27": (27, {3: 13}),
}

# Taguchi's standard L8 and L9 as printed in the appendices of Ross (Taguchi Techniques for Quality
# Engineering) and Phadke (Quality Engineering Using Robust Design), levels 1..s. Typed here only as
# an independent reference for the generated arrays' row and column order.
TAGUCHI_L8 = """
1 1 1 1 1 1 1
1 1 1 2 2 2 2
1 2 2 1 1 2 2
1 2 2 2 2 1 1
2 1 2 1 2 1 2
2 1 2 2 1 2 1
2 2 1 1 2 2 1
2 2 1 2 1 1 2
"""
TAGUCHI_L9 = """
1 1 1 1
1 2 2 2
1 3 3 3
2 1 2 3
2 2 3 1
2 3 1 2
3 1 3 2
3 2 1 3
3 3 2 1
"""


def _table(text: str) -> np.ndarray:
    return np.array([[int(x) - 1 for x in line.split()] for line in text.strip().splitlines()])


def two_level(names: str) -> list[Factor]:
    return [Factor(name, ["low", "high"]) for name in names]


# --- orthogonal arrays -------------------------------------------------------------------------


def test_array_names_cover_every_array():
    assert set(ARRAY_NAMES) == set(EXPECTED_SHAPES)


@pytest.mark.parametrize("name", list(EXPECTED_SHAPES))
def test_every_array_is_orthogonal_with_the_right_shape_and_levels(name):
    array = get_array(name)
    runs, level_counts = EXPECTED_SHAPES[name]
    assert array.matrix.shape == (runs, sum(level_counts.values()))
    assert array.level_counts() == level_counts
    assert is_orthogonal(array.matrix, array.levels)
    for column, s in enumerate(array.levels):
        assert sorted(set(array.matrix[:, column])) == list(range(s))


def test_is_orthogonal_rejects_perturbed_and_confounded_arrays():
    matrix = np.array(get_array("L8").matrix)
    perturbed = matrix.copy()
    perturbed[0, 3] = 1 - perturbed[0, 3]
    assert not is_orthogonal(perturbed)
    # Balanced columns but a repeated column: level pairs (0,1) and (1,0) never occur.
    assert not is_orthogonal(np.column_stack([matrix[:, 0], matrix[:, 0]]))
    # Swapping two runs within one column keeps every column balanced but breaks pair balance.
    swapped = matrix.copy()
    swapped[[0, 2], 1] = swapped[[2, 0], 1]
    assert np.all(swapped[:, 1].sum() == matrix[:, 1].sum()) and not is_orthogonal(swapped)
    assert is_orthogonal(matrix)


def test_generated_l8_and_l9_are_taguchis_standard_tables():
    np.testing.assert_array_equal(get_array("L8").matrix, _table(TAGUCHI_L8))
    np.testing.assert_array_equal(get_array("L9").matrix, _table(TAGUCHI_L9))


def test_gf4_tables_form_a_field_with_x_squared_plus_x_plus_one():
    gf = GaloisField(4)
    add, mul, elements = gf.add, gf.mul, range(4)
    # Codes 0, 1, 2, 3 = 0, 1, x, x+1: addition is XOR, x·x = x + 1, x·(x+1) = x² + x = 1.
    np.testing.assert_array_equal(add, np.bitwise_xor.outer(np.arange(4), np.arange(4)))
    assert mul[2, 2] == 3 and mul[2, 3] == 1 and mul[3, 3] == 2
    assert gf.modulus == [1, 1, 1]
    for a, b, c in itertools.product(elements, repeat=3):
        assert add[a, add[b, c]] == add[add[a, b], c]
        assert mul[a, mul[b, c]] == mul[mul[a, b], c]
        assert mul[a, add[b, c]] == add[mul[a, b], mul[a, c]]
    np.testing.assert_array_equal(add, add.T)
    np.testing.assert_array_equal(mul, mul.T)
    for a in elements:
        assert add[a, 0] == a and mul[a, 1] == a and mul[a, 0] == 0
        assert any(add[a, b] == 0 for b in elements)
        if a:
            assert mul[a, gf.inverse(a)] == 1
    # Arithmetic modulo 4 is no field: 2 · 2 = 0 there, a zero divisor the real GF(4) does not have.
    assert (2 * 2) % 4 == 0 and mul[2, 2] != 0


@pytest.mark.parametrize("prime", [2, 3, 5])
def test_prime_fields_are_arithmetic_modulo_p(prime):
    gf = GaloisField(prime)
    grid = np.arange(prime)
    np.testing.assert_array_equal(gf.add, np.add.outer(grid, grid) % prime)
    np.testing.assert_array_equal(gf.mul, np.multiply.outer(grid, grid) % prime)


def test_non_prime_power_has_no_field():
    with pytest.raises(DesignError, match="prime power"):
        GaloisField(6)


@pytest.mark.parametrize("name", ["L4", "L8", "L16"])
def test_i_xor_j_column_is_the_product_of_columns_i_and_j(name):
    array = get_array(name)
    signs = 1 - 2 * array.matrix  # level 0 → +1, level 1 → -1
    for i, j in itertools.combinations(range(1, array.n_columns + 1), 2):  # Taguchi's 1-based numbers
        assert array.interaction_columns(i - 1, j - 1) == ((i ^ j) - 1,)
        np.testing.assert_array_equal(signs[:, (i ^ j) - 1], signs[:, i - 1] * signs[:, j - 1])
    assert array.interaction_table()[(0, 1)] == (2,)


@pytest.mark.parametrize("name", ["L9", "L27", "L16b", "L25"])
def test_interaction_columns_carry_exactly_the_pair_cells(name):
    """The q - 1 interaction columns of columns i, j are functions of the (i, j) level pair, and no
    other column is: together with i and j they span the pair's cell means."""
    array = get_array(name)
    q = array.levels[0]
    for i, j in itertools.combinations(range(array.n_columns), 2):
        carried = array.interaction_columns(i, j)
        assert len(carried) == q - 1 and i not in carried and j not in carried
        cells = array.matrix[:, i] * q + array.matrix[:, j]
        for column in range(array.n_columns):
            constant_in_cells = all(len(set(array.matrix[cells == c, column])) == 1 for c in range(q * q))
            assert constant_in_cells == (column in carried or column in (i, j))


def test_l27_interaction_columns_follow_taguchis_layout():
    array = get_array("L27")
    # Columns 1, 2, 5 are the basic ones; 1×2 → 3, 4; 1×5 → 6, 7; 2×5 → 8, 9 (1-based).
    assert array.interaction_columns(0, 1) == (2, 3)
    assert array.interaction_columns(0, 4) == (5, 6)
    assert array.interaction_columns(1, 4) == (7, 8)


def test_l16b_uses_gf4_not_mod_4():
    array = get_array("L16b")
    assert array.galois_field.order == 4 and array.galois_field.mul[2, 2] == 3
    # Column 4 is x·a + b over GF(4) (x coded 2); computed modulo 4, 2a + b takes only two values for
    # each b, so it would not be orthogonal to column 2.
    a, b = array.matrix[:, 0], array.matrix[:, 1]
    np.testing.assert_array_equal(array.matrix[:, 3], array.galois_field.add[array.galois_field.mul[2, a], b])
    assert not is_orthogonal(np.column_stack([b, (2 * a + b) % 4]))


def test_l12_is_plackett_burman_and_l18_keeps_columns_1_2_interaction_clean():
    l12 = get_array("L12")
    generator = [1 if s == "+" else 0 for s in "++-+++---+-"]
    assert generator in l12.matrix.tolist() and [0] * 11 in l12.matrix.tolist()
    with pytest.raises(DesignError, match="no interaction columns"):
        l12.interaction_columns(0, 1)
    l18 = get_array("L18")
    # Every other column is balanced within each of the six (column 1, column 2) cells, so the
    # 1×2 interaction is orthogonal to all other columns, as in Taguchi's L18.
    cells = l18.matrix[:, 0] * 3 + l18.matrix[:, 1]
    for column in range(2, 8):
        for cell in range(6):
            assert sorted(l18.matrix[cells == cell, column]) == [0, 1, 2]


# --- designs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ([2] * 3, "L4"),
        ([2] * 4, "L8"),
        ([2] * 7, "L8"),
        ([2] * 8, "L16"),
        ([2] * 11, "L16"),
        ([2] * 15, "L16"),
        ([3] * 4, "L9"),
        ([3] * 5, "L18"),
        ([3] * 7, "L18"),
        ([2] + [3] * 2, "L18"),
        ([2] + [3] * 7, "L18"),
        ([3] * 8, "L27"),
        ([4] * 5, "L16b"),
        ([5] * 6, "L25"),
    ],
)
def test_auto_choice_picks_the_smallest_array_that_fits(levels, expected):
    factors = [Factor(f"F{i}", list(range(s))) for i, s in enumerate(levels)]
    assert choose_array(factors).array.name == expected


def test_auto_choice_keeps_interactions_off_factor_columns():
    design = choose_array(two_level("ABCD"), interactions=[("A", "B"), ("A", "C")])
    assert design.array.name == "L8"
    # The linear-graph assignment, 1-based: A→1, B→2, A×B→3, C→4, A×C→5, D→6, column 7 error.
    assert {name: c + 1 for name, c in design.columns.items()} == {"A": 1, "B": 2, "C": 4, "D": 6}
    assert design.interactions == {("A", "B"): (2,), ("A", "C"): (4,)}
    assert design.error_columns == (6,)
    assert design.column_assignment() == [
        (1, "A"), (2, "B"), (3, "A×B"), (4, "C"), (5, "A×C"), (6, "D"), (7, "error"),
    ]
    # In L8, A×B and C×D would share a column whatever the assignment, so L16 is needed.
    assert choose_array(two_level("ABCD"), interactions=[("A", "B"), ("C", "D")]).array.name == "L16"
    # Three-level: A×B takes two columns of L9, leaving no room for C, and L18 has no interaction columns.
    three = [Factor(n, [1, 2, 3]) for n in "ABC"]
    design = choose_array(three, interactions=[("B", "A")])
    assert design.array.name == "L27" and design.interactions == {("A", "B"): (2, 3)}
    # Four-level: A×B takes the three remaining columns of L16b besides A and B.
    four = [Factor(n, list("abcd")) for n in "AB"]
    assert choose_array(four, interactions=[("A", "B")]).interactions == {("A", "B"): (2, 3, 4)}


def test_l12_is_only_used_by_name():
    design = choose_array(two_level("ABCDEFGH"), array="L12")
    assert design.array.name == "L12" and len(design.error_columns) == 3
    with pytest.raises(DesignError, match="L12 cannot keep interaction A×B"):
        choose_array(two_level("ABC"), interactions=[("A", "B")], array="L12")


def test_impossible_designs_raise_clear_errors():
    with pytest.raises(DesignError, match=r"factor 'C' has 3 levels but L8 .* arrays with 3-level columns: L9, L18, L27"):
        choose_array(two_level("AB") + [Factor("C", [1, 2, 3])], array="L8")
    with pytest.raises(DesignError, match=r"L4 \(4 runs: 3 two-level columns\) has 3 column\(s\) with 2 levels but 4 factors"):
        choose_array(two_level("ABCD"), array="L4")
    with pytest.raises(DesignError, match=r"A×B .* L8 would fit"):
        choose_array(two_level("ABC"), interactions=[("A", "B")], array="L4")
    with pytest.raises(DesignError, match=r"interaction A×B needs column 3, which 'C' occupies"):
        choose_array(two_level("ABC"), interactions=[("A", "B")], array="L8", column_numbers={"A": 1, "B": 2, "C": 3})
    pinned = choose_array(two_level("ABC"), interactions=[("A", "B")], column_numbers={"A": 1, "B": 2, "C": 5})
    assert pinned.array.name == "L8" and pinned.columns == {"A": 0, "B": 1, "C": 4}
    with pytest.raises(DesignError, match="no orthogonal array of this library holds"):
        choose_array(two_level("ABCDEFGHIJKLMNOP"))
    with pytest.raises(DesignError, match=r"has 1 column\(s\) with 2 levels but 2 factors"):
        choose_array(two_level("AB") + [Factor("C", [1, 2, 3])])
    with pytest.raises(DesignError, match="no array here has 6-level columns"):
        choose_array([Factor("A", list(range(6)))])
    with pytest.raises(DesignError, match="unknown factor 'Z'"):
        choose_array(two_level("AB"), interactions=[("A", "Z")])
    with pytest.raises(DesignError, match="at least 2 levels"):
        Factor("A", [1])
    with pytest.raises(DesignError, match="twice"):
        Factor("A", [1, 1])
    with pytest.raises(DesignError, match="distinct"):
        choose_array([Factor("A", [0, 1]), Factor("A", [0, 1])])
    with pytest.raises(DesignError, match="unknown orthogonal array"):
        choose_array(two_level("AB"), array="L7")
    assert issubclass(DesignError, ValueError)


def test_runs_are_row_major_with_replicates_and_written_to_csv(tmp_path):
    factors = [Factor("noise", ["gaussian", "equalized"]), Factor("steps", [10, 20]), Factor("lr", [1e-3, 1e-4])]
    design = choose_array(factors, replicates=[11, 22, 33])
    assert design.array.name == "L4" and design.n_jobs == 12
    runs = design.runs()
    assert [(r.job, r.row, r.replicate) for r in runs[:4]] == [(0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0)]
    # Row 2 of L4 is (1, 0, 1): the second level of noise, the first of steps, the second of lr.
    assert runs[7].settings == {"noise": "equalized", "steps": 10, "lr": 1e-4}
    assert design.row_and_replicate(7) == (2, 1)
    path = design.to_csv(tmp_path / "sweep" / "design.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    assert rows[7] == {
        "job": "7", "row": "2", "replicate": "1", "replicate_label": "22",
        "noise": "equalized", "steps": "10", "lr": "0.0001",
        "noise_level": "1", "steps_level": "0", "lr_level": "1",
    }


def test_design_rejects_an_interaction_on_a_factor_column():
    array = get_array("L8")
    with pytest.raises(DesignError, match="which 'C' occupies"):
        Design(array, tuple(two_level("ABC")), {"A": 0, "B": 1, "C": 2}, {("A", "B"): (2,)})


# --- signal-to-noise ratios --------------------------------------------------------------------


def test_signal_to_noise_values_by_hand():
    # y = 1, 2, 3: mean(y²) = 14/3; log10(14/3) = 1.146128 - 0.477121 = 0.669007, so
    # smaller_is_better = -6.69007 dB.
    assert smaller_is_better([1, 2, 3]) == pytest.approx(-6.690068, abs=1e-6)
    # mean(1/y²) = (1 + 1/4 + 1/9)/3 = 49/108; log10(49/108) = 1.690196 - 2.033424 = -0.343228,
    # so larger_is_better = 3.43228 dB.
    assert larger_is_better([1, 2, 3]) == pytest.approx(3.432277, abs=1e-6)
    # y = 2, 4, 6: mean 4, sample variance ((-2)² + 0 + 2²)/2 = 4.
    # nominal_is_best_mean_var = 10 log10(16/4) = 6.0206 dB; nominal_is_best_var = -10 log10(4) = -6.0206 dB.
    assert nominal_is_best_mean_var([2, 4, 6]) == pytest.approx(6.020600, abs=1e-6)
    assert nominal_is_best_var([2, 4, 6]) == pytest.approx(-6.020600, abs=1e-6)
    # One replicate: smaller_is_better = -20 log10(y); y = 10 → -20 dB, larger_is_better → +20 dB.
    assert smaller_is_better([10]) == pytest.approx(-20.0)
    assert signal_to_noise([10], "larger_is_better") == pytest.approx(20.0)


def test_signal_to_noise_refuses_values_outside_its_domain():
    with pytest.raises(ValueError, match="response of 0"):
        larger_is_better([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        larger_is_better([1.0, -2.0])
    with pytest.raises(ValueError, match="non-negative"):
        smaller_is_better([1.0, -2.0])
    with pytest.raises(ValueError, match="all 0"):
        smaller_is_better([0.0, 0.0])
    with pytest.raises(ValueError, match="zero variance"):
        nominal_is_best_var([3.0, 3.0])
    with pytest.raises(ValueError, match="at least 2"):
        nominal_is_best_mean_var([3.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        smaller_is_better([1.0, float("nan")])
    with pytest.raises(ValueError, match="unknown S/N type"):
        signal_to_noise([1.0], "bigger")


# --- analysis ----------------------------------------------------------------------------------


def montgomery_plasma_etch():
    """Montgomery, *Design and Analysis of Experiments* (8th ed., Wiley 2013), Example 6.1: the plasma
    etch 2^3 factorial with n = 2 replicates (A gap, B C2F6 flow, C power; data Table 6.4, effect
    estimates and percent contributions Table 6.5, ANOVA Table 6.6). A 2^3 in standard order is the L8
    with A, B, C in columns 1, 2, 4 and AB, AC, BC, ABC in columns 3, 5, 6, 7. Montgomery keeps ABC
    as a term, so it gets a pseudo-factor in column 7."""
    factors = two_level("ABC") + [Factor("ABC", ["+", "-"])]
    design = choose_array(
        factors, [("A", "B"), ("A", "C"), ("B", "C")], array="L8", replicates=2,
        column_numbers={"A": 1, "B": 2, "C": 4, "ABC": 7},
    )
    # L8 rows are (a, b, c) = 000, 001, 010, ... so rows are (1), c, b, bc, a, ac, ab, abc.
    etch_rate = np.array([
        [550, 604],    # (1)  total 1154
        [1037, 1052],  # c    total 2089
        [633, 601],    # b    total 1234
        [1075, 1063],  # bc   total 2138
        [669, 650],    # a    total 1319
        [749, 868],    # ac   total 1617
        [642, 635],    # ab   total 1277
        [729, 860],    # abc  total 1589
    ])
    return design, etch_rate


def test_published_anova_montgomery_plasma_etch():
    design, etch_rate = montgomery_plasma_etch()
    result = analyze(design, etch_rate, "smaller_is_better", anova_on="raw", pooling="none")
    anova = result.anova
    # Contrast_A = a + ab + ac + abc - (1) - b - c - bc = 5802 - 6615 = -813; SS_A = 813²/16 = 41310.5625.
    # Contrast_C = 7433 - 4984 = 2449; SS_C = 2449²/16 = 374850.0625. The other rows as published.
    published = {
        "A": 41310.5625, "B": 217.5625, "C": 374850.0625, "A×B": 2475.0625,
        "A×C": 94402.5625, "B×C": 18.0625, "ABC": 126.5625,
    }
    for term, ss in published.items():
        assert anova.row(term).df == 1
        assert anova.row(term).sum_of_squares == pytest.approx(ss, abs=1e-6)
    assert anova.error_df == 8 and anova.error_sum_of_squares == pytest.approx(18020.50, abs=1e-6)
    assert anova.error_components == (("replicates (within rows)", 8, pytest.approx(18020.50)),)
    assert anova.total_df == 15 and anova.total_sum_of_squares == pytest.approx(531420.9375, abs=1e-6)
    # Table 6.6, F0 = MS / MS_E with MS_E = 18020.50/8 = 2252.5625.
    published_f = {"A": 18.34, "B": 0.10, "C": 166.41, "A×B": 1.10, "A×C": 41.91, "B×C": 0.01, "ABC": 0.06}
    for term, f_value in published_f.items():
        assert round(anova.row(term).f_value, 2) == f_value
    # Table 6.5's "percent contribution" is SS / SS_T (not Taguchi's pure SS).
    published_percent = {
        "A": 7.7736, "B": 0.0409, "C": 70.5373, "A×B": 0.4657, "A×C": 17.7642, "B×C": 0.0034, "ABC": 0.0238,
    }
    for term, percent in published_percent.items():
        assert round(100 * anova.row(term).sum_of_squares / anova.total_sum_of_squares, 4) == percent
    # Taguchi's ρ uses SS' = SS - Ve: ρ_A = (41310.5625 - 2252.5625)/531420.9375 = 7.3497 %,
    # and the error gets SS_e + 7·Ve = 18020.5 + 15767.9375 = 33788.4375, ρ_e = 6.3581 %.
    assert anova.row("A").percent_contribution == pytest.approx(7.349729, abs=1e-5)
    assert anova.error_percent_contribution == pytest.approx(6.358121, abs=1e-5)
    total_rho = sum(r.percent_contribution for r in anova.rows) + anova.error_percent_contribution
    assert total_rho == pytest.approx(100.0)
    # Effects (Table 6.5): A = -813/8 = -101.625, AB = -24.875, AC = -153.625. An interaction effect is
    # the mean where its sign is +1 (a = b: level 0 of column 3) minus the mean where it is -1.
    ab_means = result.interactions["A×B"].column_level_means[2]
    assert ab_means[0] - ab_means[1] == pytest.approx(-24.875)
    ac_means = result.interactions["A×C"].column_level_means[4]
    assert ac_means[0] - ac_means[1] == pytest.approx(-153.625)
    assert result.response_tables["mean"].level_means["A"][1] - result.response_tables["mean"].level_means["A"][0] == pytest.approx(-101.625)


def hand_worked_l8():
    """Five two-level factors on L8 columns 1-5, columns 6 and 7 empty, one replicate. With x = -1 at
    level 0 and +1 at level 1 the responses are exactly
        y = 20 + 3 x_A + 2 x_B + 1 x_C + 0.5 x_D - 1.5 x_E + 0.5 x_6 - 0.25 x_7,
    so a column with coefficient β has level means 20 ∓ β and SS = 8 β²."""
    design = choose_array(two_level("ABCDE"))
    y = np.array([14.75, 13.25, 21.25, 18.75, 19.25, 24.75, 22.75, 25.25])
    return design, y


def check_hand_worked_anova(result):
    anova = result.anova
    # Level totals (level 0, level 1) and SS = (T1 - T0)²/8:
    #   A (rows 0-3 | 4-7):        68 | 92 → 576/8 = 72
    #   B (rows 0,1,4,5 | 2,3,6,7): 72 | 88 → 256/8 = 32
    #   C (rows 0,1,6,7 | 2-5):    76 | 84 →  64/8 = 8
    #   D (rows 0,2,4,6 | 1,3,5,7): 78 | 82 →  16/8 = 2
    #   E (rows 0,2,5,7 | 1,3,4,6): 86 | 74 → 144/8 = 18
    #   column 6: 78 | 82 → 2;  column 7: 81 | 79 → 0.5.   Total SS = Σ (y - 20)² = 134.5.
    expected_ss = {"A": 72.0, "B": 32.0, "C": 8.0, "D": 2.0, "E": 18.0}
    for term, ss in expected_ss.items():
        assert anova.row(term).sum_of_squares == pytest.approx(ss)
    assert anova.total_sum_of_squares == pytest.approx(134.5)
    assert anova.error_components[:2] == (
        ("column 6 (unassigned)", 1, pytest.approx(2.0)), ("column 7 (unassigned)", 1, pytest.approx(0.5)),
    )
    # Pooling up (min error df 3, at most floor(0.5·5) = 2 terms): the error has 2 df, so the smallest
    # term D (SS 2) is pooled → error SS 2 + 0.5 + 2 = 4.5 on 3 df, Ve = 1.5. Then 3 df suffice.
    assert anova.pooled_terms == ("D",)
    assert anova.error_df == 3 and anova.error_sum_of_squares == pytest.approx(4.5)
    assert anova.error_mean_square == pytest.approx(1.5)
    # F = SS/Ve: A 48, B 21.333, C 5.333, E 12. F(0.05; 1, 3) = 10.128, so A, B, E are significant, C not.
    for term, f_value in {"A": 48.0, "B": 64 / 3, "C": 16 / 3, "E": 12.0}.items():
        assert anova.row(term).f_value == pytest.approx(f_value)
    assert [r.term for r in anova.rows if not r.pooled and r.p_value < 0.05] == ["A", "B", "E"]
    # SS' = SS - Ve: A 70.5, B 30.5, C 6.5, E 16.5; error SS' = 4.5 + 4·1.5 = 10.5 (sums to 134.5).
    # ρ = SS'/134.5: A 52.416 %, B 22.677 %, C 4.833 %, E 12.268 %, error 7.807 %.
    for term, rho in {"A": 52.41636, "B": 22.67658, "C": 4.83271, "E": 12.26766}.items():
        assert anova.row(term).percent_contribution == pytest.approx(rho, abs=1e-4)
    assert anova.error_pure_sum_of_squares == pytest.approx(10.5)
    assert anova.error_percent_contribution == pytest.approx(7.80669, abs=1e-4)
    assert math.isnan(anova.row("D").percent_contribution)


def test_hand_worked_anova_pooling_and_prediction():
    design, y = hand_worked_l8()
    result = analyze(design, y, "larger_is_better", anova_on="raw")
    check_hand_worked_anova(result)
    # Larger is better: level means A 17|23, B 18|22, C 19|21, D 19.5|20.5, E 21.5|18.5.
    assert result.best_levels == {"A": "high", "B": "high", "C": "high", "D": "high", "E": "low"}
    # Prediction over the unpooled A, B, C, E: 20 + 3 + 2 + 1 + 1.5 = 27.5.
    prediction = result.prediction
    assert prediction.terms == ("A", "B", "C", "E")
    assert prediction.value == pytest.approx(27.5)
    # n_eff = 8 / (1 + 4) = 1.6; t(0.975; 3) = 3.182446; half-width = 3.182446·sqrt(1.5/1.6) = 3.08137.
    assert prediction.n_eff == pytest.approx(1.6)
    assert prediction.half_width == pytest.approx(3.182446 * math.sqrt(1.5 / 1.6), rel=1e-6)
    assert prediction.interval == pytest.approx((27.5 - 3.08137, 27.5 + 3.08137), abs=1e-4)
    # One confirmation run: 3.182446·sqrt(1.5·(1/1.6 + 1)) = 4.96904.
    assert prediction.confirmation_half_width(1) == pytest.approx(3.182446 * math.sqrt(1.5 * 1.625), rel=1e-6)


def test_sn_analysis_runs_the_same_anova_on_the_sn_ratios():
    """With one replicate, smaller_is_better S/N = -20 log10(y); responses 10^(-η/20) therefore give
    S/N ratios η equal to the hand-worked data, and every hand-derived number must reappear."""
    design, eta = hand_worked_l8()
    result = analyze(design, 10 ** (-eta / 20), "smaller_is_better")
    np.testing.assert_allclose(result.sn, eta, rtol=0, atol=1e-10)
    check_hand_worked_anova(result)
    assert result.prediction.value == pytest.approx(27.5)
    assert result.quantity == "S/N ratio (smaller_is_better, dB)"


def test_sn_per_row_over_replicates_and_response_tables():
    design = choose_array(two_level("ABC"), replicates=3)
    rng = np.random.default_rng(0)
    responses = rng.uniform(1.0, 5.0, size=(4, 3))
    result = analyze(design, responses, "nominal_is_best_mean_var", pooling="none")
    expected_sn = [10 * np.log10(r.mean() ** 2 / r.var(ddof=1)) for r in responses]
    np.testing.assert_allclose(result.sn, expected_sn)
    np.testing.assert_allclose(result.std, responses.std(axis=1, ddof=1))
    # L4 column 1 is (0, 0, 1, 1): the A level means are means of rows 0,1 and rows 2,3.
    sn_table = result.response_tables["sn"]
    np.testing.assert_allclose(sn_table.level_means["A"], [np.mean(expected_sn[:2]), np.mean(expected_sn[2:])])
    deltas = {f: sn_table.delta[f] for f in "ABC"}
    assert sorted(deltas, key=lambda f: sn_table.rank[f]) == sorted(deltas, key=lambda f: -deltas[f])
    np.testing.assert_allclose(result.response_tables["mean"].level_means["B"],
                               [responses[[0, 2]].mean(), responses[[1, 3]].mean()])
    # L4 with three factors is saturated: no error, so no F and no confidence interval.
    assert result.anova.error_df == 0 and math.isnan(result.prediction.half_width)


def test_auto_pooling_is_limited_to_the_smallest_half():
    design = choose_array(two_level("ABCDEFG"))
    effects = np.array([8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125])
    y = 50 + (1 - 2 * design.array.matrix) @ effects
    result = analyze(design, y, "larger_is_better", anova_on="raw")
    # Saturated L8: error df 0; the three smallest terms (floor(7/2) = 3) are pooled → 3 error df.
    assert result.anova.pooled_terms == ("E", "F", "G")
    assert result.anova.error_df == 3
    strict = analyze(design, y, "larger_is_better", anova_on="raw", pooling=PoolingRule(min_error_df=3, max_pooled_fraction=0.3))
    assert strict.anova.pooled_terms == ("F", "G") and strict.anova.error_df == 2
    chosen = analyze(design, y, "larger_is_better", anova_on="raw", pooling=["A", "G"])
    assert chosen.anova.pooled_terms == ("A", "G")
    with pytest.raises(DesignError, match="unknown term"):
        analyze(design, y, "larger_is_better", anova_on="raw", pooling=["Z"])


def test_interaction_changes_the_best_levels_and_prediction():
    design = choose_array(two_level("ABC"), interactions=[("A", "B")])
    signs = 1 - 2 * design.array.matrix  # +1 at level 0, -1 at level 1
    xa, xb, xc = (-signs[:, design.columns[f]] for f in "ABC")  # -1 at level 0, +1 at level 1
    y = 10 + 2 * xa + 1 * xb - 3 * xa * xb + 0.5 * xc
    result = analyze(design, y, "larger_is_better", anova_on="raw", pooling="none")
    # Cells 10 + 2xA + xB - 3xAxB: (-,-) 4, (-,+) 12, (+,-) 14, (+,+) 10: best is A high, B low,
    # although B's main effect alone favours B high. Predicted optimum 14 + 0.5 (C high) = 14.5.
    np.testing.assert_allclose(result.interactions["A×B"].cell_mean, [[4, 12], [14, 10]])
    assert result.best_levels["A"] == "high" and result.best_levels["B"] == "low"
    assert result.prediction.value == pytest.approx(14.5)
    assert "A×B" in result.prediction.terms
    # Column 3 (A xor B): level 0 where A = B (xA·xB = +1, mean 10 - 3 = 7), level 1 where they differ (13).
    np.testing.assert_allclose(result.interactions["A×B"].column_level_means[2], [7.0, 13.0])
    assert result.anova.row("A×B").sum_of_squares == pytest.approx(8 * 3.0**2)


@pytest.mark.parametrize(("factor_levels", "deleted_rows"), [([2, 2, 2, 2], [2, 5]), ([3, 3, 3], [4])])
def test_least_squares_recovers_exact_additive_effects_and_optimum(factor_levels, deleted_rows):
    factors = [Factor(f"F{i}", list(range(s))) for i, s in enumerate(factor_levels)]
    design = choose_array(factors, replicates=2)
    rng = np.random.default_rng(1)
    effects = {f.name: rng.normal(0, 3, size=f.n_levels) for f in factors}
    row_values = 40 + sum(effects[f.name][design.level_indices(f.name)] for f in factors)
    responses = np.repeat(row_values[:, None], 2, axis=1)
    complete = analyze(design, responses, "larger_is_better", anova_on="raw", pooling="none")
    truth = 40 + sum(e.max() for e in effects.values())
    assert complete.prediction.value == pytest.approx(truth)
    assert complete.best_level_indices == {f.name: int(np.argmax(effects[f.name])) for f in factors}
    failed = responses.copy()
    failed[deleted_rows] = np.nan
    with pytest.raises(MissingRunsError, match=rf"job {2 * deleted_rows[0]} \(row {deleted_rows[0]}, replicate 0: NaN\)"):
        analyze(design, failed, "larger_is_better", anova_on="raw")
    for anova_on in ("raw", "sn"):
        result = analyze(design, failed, "larger_is_better", anova_on=anova_on, missing="least_squares", pooling="none")
        table = result.response_tables["mean"]
        for f in factors:
            # Balanced level means of additive data: 40 + effect + mean of every other factor's effects.
            others = sum(effects[g.name].mean() for g in factors if g.name != f.name)
            np.testing.assert_allclose(table.level_means[f.name], 40 + effects[f.name] + others, atol=1e-9)
        assert result.best_level_indices == complete.best_level_indices
        assert len(result.missing.missing_jobs) == 2 * len(deleted_rows)
        assert "least-squares" in result.missing.note
    raw = analyze(design, failed, "larger_is_better", anova_on="raw", missing="least_squares", pooling="none")
    assert raw.prediction.value == pytest.approx(truth)
    # Error df: N - 1 - Σ df - number filled in.
    n_factor_df = sum(s - 1 for s in factor_levels)
    assert raw.anova.error_df == design.n_jobs - 1 - n_factor_df - 2 * len(deleted_rows)
    # With rows missing, n_eff comes from the exact least-squares leverage, below Taguchi's N/(1+df).
    assert raw.prediction.n_eff < design.n_jobs / (1 + n_factor_df)


def test_taguchi_n_eff_is_the_least_squares_leverage_for_complete_data():
    design = choose_array(two_level("ABCD") + [Factor("E", [0, 1])], interactions=[("A", "B")])
    rows = np.repeat(np.arange(design.n_rows), 2)
    observed = np.ones(len(rows), dtype=bool)
    best = {"A": 1, "B": 0, "C": 1, "D": 0, "E": 1}
    for terms, df in ((("A", "C"), 2), (("A", "B", "A×B", "E"), 4)):
        leverage = prediction_leverage(design, terms, rows, observed, best)
        assert 1 / leverage == pytest.approx(len(rows) / (1 + df))


def test_failed_runs_are_reported_never_dropped():
    design = choose_array(two_level("ABCD"), replicates=2)
    responses = {job: 1.0 + job for job in range(design.n_jobs) if job != 3}
    responses[6] = float("inf")
    with pytest.raises(MissingRunsError, match=r"job 3 \(row 1, replicate 1: no result\), job 6 \(row 3, replicate 0: inf\)"):
        analyze(design, responses)
    result = analyze(design, responses, missing="least_squares")
    # Rows 1 and 3 keep one replicate each: their S/N comes from it, and the report says so.
    assert result.missing.partial_rows == {1: 1, 3: 1}
    assert result.missing.filled_rows == ()
    assert result.sn[1] == pytest.approx(smaller_is_better([3.0]))
    assert "row 1 from 1 replicate(s)" in result.missing.note
    with pytest.raises(MissingRunsError, match="too many failed runs"):
        analyze(design, {0: 1.0, 1: 2.0}, missing="least_squares")
    # Saturated L4: one row down to one replicate leaves 3 rows with a std for a 4-parameter model,
    # so the std table is left out, and said to be, while the S/N analysis goes on.
    small = choose_array(two_level("ABC"), replicates=2)
    result = analyze(small, [[1.0, 2.0], [3.0, np.nan], [2.0, 2.5], [1.5, 1.0]], missing="least_squares")
    assert result.std is None and "std" not in result.response_tables
    assert result.missing.std_table_omitted and "no std response table" in result.missing.note
    assert result.sn[1] == pytest.approx(smaller_is_better([3.0]))


def test_analysis_refuses_invalid_requests():
    design = choose_array(two_level("ABC"), replicates=2)
    with pytest.raises(DesignError, match="row 2 .*response of 0"):
        analyze(design, [[1, 2], [3, 4], [0, 5], [6, 7]], "larger_is_better")
    with pytest.raises(DesignError, match="two-step"):
        analyze(design, np.ones((4, 2)), "nominal_is_best_var", anova_on="raw")
    with pytest.raises(DesignError, match="at least 2 replicates"):
        analyze(choose_array(two_level("ABC")), np.ones(4), "nominal_is_best_var")
    with pytest.raises(DesignError, match="4 rows × 2 replicates"):
        analyze(design, np.ones(5))
    with pytest.raises(DesignError, match="not an S/N type"):
        analyze(design, np.ones((4, 2)), "biggest")


# --- report ------------------------------------------------------------------------------------


def test_markdown_report_and_plots(tmp_path):
    design = choose_array(two_level("ABCD"), interactions=[("A", "B")], replicates=2)
    rng = np.random.default_rng(2)
    responses = rng.uniform(1.0, 3.0, size=(8, 2))
    responses[5, 1] = np.nan
    result = analyze(design, responses, "smaller_is_better", missing="least_squares")
    text = analysis_markdown(result)
    for expected in (
        "# Taguchi analysis: L8", "## Response tables", "## Analysis of variance", "(pooled)",
        "SS'", "ρ (%)", "## Best levels", "## Predicted optimum", "± ", "## Interactions", "A×B (column 3)",
        "job 11 (row 5, replicate 1: NaN)", "| 3 | A×B |", "failed", "(filled)",
    ):
        assert expected in text, expected
    assert result.anova.pooled_terms and all(f"{t} (pooled)" in text for t in result.anova.pooled_terms)
    main = plot_main_effects(result, tmp_path / "plots" / "main_effects.png")
    pair = plot_interaction(result, ("B", "A"), tmp_path / "plots" / "interaction_AxB.png")
    for path in (main, pair):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DesignError, match="not an assigned interaction"):
        plot_interaction(result, ("C", "D"), tmp_path / "x.png")


# --- sweep folders: the files the Hydra sweeper and sd-taguchi share ---------------------------------

def _sweep_spec():
    from spectral_diffusion.taguchi.sweep_folder import SweepSpec

    design = choose_array([Factor("A", ["a1", "a2"]), Factor("B", [1, 2]), Factor("C", [True, False])],
                          interactions=[("A", "B")], array="L8", replicates=[0, 1])
    overrides = tuple((f"job={job}",) for job in range(design.n_jobs))
    return SweepSpec(design, "objective", "smaller_is_better", "record", overrides)


def test_sweep_spec_round_trips_through_json(tmp_path):
    from spectral_diffusion.taguchi.sweep_folder import SweepSpec

    spec = _sweep_spec()
    spec.save(tmp_path)
    loaded = SweepSpec.load(tmp_path)
    assert loaded.design.columns == spec.design.columns
    assert loaded.design.interactions == spec.design.interactions == {("A", "B"): (2,)}
    assert loaded.design.factor("B").levels == (1, 2) and loaded.design.replicate_labels == (0, 1)
    assert loaded.overrides == spec.overrides


def test_sweep_csvs_hold_the_analysis_numbers(tmp_path):
    from spectral_diffusion.taguchi.sweep_folder import (
        JobResult, read_results_csv, write_analysis, write_results_csv,
    )

    spec = _sweep_spec()
    design = spec.design
    values = [1.0 + 0.5 * run.row + 0.1 * run.replicate for run in design.runs()]
    results = [JobResult(run.job, run.row, run.replicate, run.replicate, "ok", values[run.job], str(run.job))
               for run in design.runs()]
    results[3] = JobResult(3, 1, 1, 1, "failed", None, "3", "ValueError: boom")
    write_results_csv(tmp_path / "results.csv", spec, results)
    assert read_results_csv(tmp_path / "results.csv") == results
    result, written = write_analysis(tmp_path, spec, results, tensorboard=False)
    assert {p.name for p in written} >= {"analysis.md", "anova.csv", "response_tables.csv", "main_effects.png",
                                         "interaction_A_x_B.png"}
    with (tmp_path / "anova.csv").open() as handle:
        anova = {row["source"]: row for row in csv.DictReader(handle)}
    assert float(anova["A"]["ss"]) == pytest.approx(result.anova.row("A").sum_of_squares)
    assert float(anova["total"]["ss"]) == pytest.approx(result.anova.total_sum_of_squares)
    with (tmp_path / "response_tables.csv").open() as handle:
        sn_rows = [r for r in csv.DictReader(handle) if r["table"] == "sn" and r["factor"] == "B"]
    assert [float(r["level_mean"]) for r in sn_rows] == pytest.approx(result.response_tables["sn"].level_means["B"])
    # The failed job is missing (filled by least squares under on_failure=record), never dropped.
    assert "job 3 (row 1, replicate 1: no result)" in (tmp_path / "analysis.md").read_text()


def _jobs_with_objectives(sweep_dir, spec, objectives):
    """One ok JobResult per run of ``spec``, its folder holding a metrics.json with ``objectives[job]`` (a dict)."""
    from spectral_diffusion.taguchi.sweep_folder import JobResult

    results = []
    for run in spec.design.runs():
        folder = sweep_dir / str(run.job)
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"objective": 1.0 + 0.1 * run.row, **objectives[run.job]}))
        results.append(JobResult(run.job, run.row, run.replicate, run.replicate, "ok", 1.0 + 0.1 * run.row,
                                 str(run.job)))
    return results


def test_sn_auto_follows_the_direction_of_the_response(tmp_path):
    from dataclasses import replace

    from spectral_diffusion.taguchi.sweep_folder import resolve_sn, write_analysis

    spec = replace(_sweep_spec(), sn="auto")
    n = spec.design.n_jobs
    recognisable = {"objective_name": "recognisable_classifier@500", "objective_direction": "maximize"}
    results = _jobs_with_objectives(tmp_path / "rec", spec, [recognisable] * n)
    resolved = resolve_sn(spec, results, tmp_path / "rec")
    assert resolved.sn == "larger_is_better" and "recognisable_classifier@500" in resolved.settings["sn_auto"]
    result, _ = write_analysis(tmp_path / "rec", spec, results, tensorboard=False)
    assert result.sn_type == "larger_is_better"
    analysis = (tmp_path / "rec" / "analysis.md").read_text()
    assert "S/N larger_is_better (sn=auto: recognisable_classifier@500 is larger-is-better)" in analysis
    # the larger-is-better analysis is the explicit one: the same best levels, the opposite of smaller-is-better's
    explicit = analyze(spec.design, [r.value for r in results], "larger_is_better")
    assert result.best_levels == explicit.best_levels
    assert result.best_levels != analyze(spec.design, [r.value for r in results], "smaller_is_better").best_levels
    # runs written before objective_direction existed: the direction of the metric they name
    old = _jobs_with_objectives(tmp_path / "fid", spec, [{"objective_name": "fid_classifier@500"}] * n)
    fid = resolve_sn(spec, old, tmp_path / "fid")
    assert fid.sn == "smaller_is_better"
    # a named response: its own direction, whatever the objective was
    assert resolve_sn(replace(spec, response="precision_classifier@500"), results, tmp_path / "rec").sn == \
        "larger_is_better"
    # an explicit sn is kept
    assert resolve_sn(replace(spec, sn="nominal_is_best_var"), results, tmp_path / "rec").sn == "nominal_is_best_var"
    # no direction (a ratio) or jobs that disagree: refused, saying how to analyse
    with pytest.raises(DesignError, match=r"hf_energy_ratio \(no direction\).*sd-taguchi analyze .* sn="):
        resolve_sn(replace(spec, response="hf_energy_ratio"), results, tmp_path / "rec")
    mixed = [recognisable] * (n - 1) + [{"objective_name": "fid_autoencoder@500", "objective_direction": "minimize"}]
    with pytest.raises(DesignError, match="recognisable_classifier@500 \\(maximize\\), fid_autoencoder@500"):
        resolve_sn(spec, _jobs_with_objectives(tmp_path / "mixed", spec, mixed), tmp_path / "mixed")


def test_confirmation_is_compared_with_the_prediction():
    from spectral_diffusion.taguchi.sweep_folder import JobResult, confirm

    spec = _sweep_spec()
    values = [1.0 + 0.5 * run.row + 0.1 * run.replicate for run in spec.design.runs()]
    result = analyze(spec.design, values, "smaller_is_better")
    near = [JobResult(16 + i, -1, i, 2 + i, "ok", v, "x") for i, v in enumerate((1.0, 1.1))]
    confirmation = confirm(result, result.best_levels, near)
    # S/N of (1.0, 1.1) = -10 log10((1 + 1.21) / 2) = -0.4336 dB.
    assert confirmation.observed == pytest.approx(-10 * math.log10((1.0 + 1.21) / 2))
    assert confirmation.predicted == result.prediction.value
    other = {**result.best_levels, "A": "a2" if result.best_levels["A"] == "a1" else "a1"}
    assert confirm(result, other, near) is None
