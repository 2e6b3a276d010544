"""Errors of the Taguchi library: an impossible design, or responses the analysis cannot use.

Both are ``ValueError``s whose messages name the factor, row or job at fault and what would work.
"""

from __future__ import annotations


class DesignError(ValueError):
    """The factors, levels, interactions or array requested cannot form an orthogonal-array design."""


class MissingRunsError(DesignError):
    """Responses are missing (failed jobs, NaN or inf) and the missing-run policy does not allow it."""
