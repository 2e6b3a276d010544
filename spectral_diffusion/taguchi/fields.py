"""Finite-field (Galois field) arithmetic tables, the algebra behind Rao–Hamming orthogonal arrays.

GF(p) is arithmetic modulo the prime p; GF(p^n) is polynomials over GF(p) modulo an irreducible one.
"""

from __future__ import annotations

import itertools

import numpy as np

from spectral_diffusion.taguchi.errors import DesignError


def prime_power(order: int) -> tuple[int, int]:
    """``(p, n)`` with ``p**n == order`` and ``p`` prime; a ``DesignError`` if ``order`` is not a prime power."""
    if order < 2:
        raise DesignError(f"a finite field needs at least 2 elements, got {order}")
    prime = next(p for p in range(2, order + 1) if order % p == 0)
    degree, rest = 0, order
    while rest % prime == 0:
        rest //= prime
        degree += 1
    if rest != 1:
        raise DesignError(f"no finite field has {order} elements: the order must be a prime power")
    return prime, degree


def _poly_mod(coefficients: list[int], modulus: list[int], prime: int) -> list[int]:
    """Remainder of a polynomial (coefficients lowest degree first) by a monic ``modulus``, over GF(prime)."""
    remainder = [c % prime for c in coefficients]
    degree = len(modulus) - 1
    for top in range(len(remainder) - 1, degree - 1, -1):
        lead = remainder[top]
        if lead:
            for k, m in enumerate(modulus):
                remainder[top - degree + k] = (remainder[top - degree + k] - lead * m) % prime
    return (remainder + [0] * degree)[:degree]


def first_irreducible_polynomial(prime: int, degree: int) -> list[int]:
    """The lexicographically first monic irreducible polynomial of ``degree`` over GF(prime).

    Coefficients lowest degree first, leading 1 included. For GF(4) this is x^2 + x + 1 (the only one).
    """
    def monic(deg: int):
        for low in itertools.product(range(prime), repeat=deg):
            yield list(low) + [1]

    for candidate in monic(degree):
        has_factor = any(
            not any(_poly_mod(candidate, divisor, prime))
            for factor_degree in range(1, degree // 2 + 1)
            for divisor in monic(factor_degree)
        )
        if not has_factor:
            return candidate
    raise AssertionError(f"no irreducible polynomial of degree {degree} over GF({prime})")  # cannot happen


class GaloisField:
    """GF(q) with its addition and multiplication tables.

    An element of GF(p^n) is coded as the integer whose base-p digits are its polynomial coefficients
    (lowest degree = lowest digit): in GF(4) the codes 0, 1, 2, 3 stand for 0, 1, x, x + 1, addition is
    the XOR of the 2-bit codes and multiplication reduces modulo x^2 + x + 1 (so x * x = x + 1, i.e.
    2 * 2 = 3 — not arithmetic modulo 4, which is no field).
    """

    def __init__(self, order: int) -> None:
        self.order = order
        self.characteristic, self.degree = prime_power(order)
        p, n = self.characteristic, self.degree
        self.modulus = first_irreducible_polynomial(p, n) if n > 1 else [0, 1]
        digits = [[(code // p**k) % p for k in range(n)] for code in range(order)]

        def encode(coefficients: list[int]) -> int:
            return sum((c % p) * p**k for k, c in enumerate(coefficients))

        add = np.empty((order, order), dtype=np.int64)
        mul = np.empty((order, order), dtype=np.int64)
        for a, b in itertools.product(range(order), repeat=2):
            add[a, b] = encode([x + y for x, y in zip(digits[a], digits[b])])
            product = [0] * (2 * n - 1)
            for i, x in enumerate(digits[a]):
                for j, y in enumerate(digits[b]):
                    product[i + j] += x * y
            mul[a, b] = encode(_poly_mod(product, self.modulus, p) if n > 1 else product)
        add.setflags(write=False)
        mul.setflags(write=False)
        self.add, self.mul = add, mul

    def inverse(self, element: int) -> int:
        """Multiplicative inverse of a non-zero element."""
        if element % self.order == 0:
            raise ZeroDivisionError("0 has no multiplicative inverse")
        return int(np.flatnonzero(self.mul[element] == 1)[0])

    def __repr__(self) -> str:
        return f"GaloisField({self.order})"
