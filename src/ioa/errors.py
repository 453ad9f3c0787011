"""Specific, user-facing errors. Each names the problem and the fix in one line."""

from __future__ import annotations


class IoaError(Exception):
    """Base class: a user-facing problem with an actionable fix."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class ConfigError(IoaError):
    """The configuration file or flags are invalid."""


class ModelNotFoundError(IoaError):
    """A model name, path or URL cannot be resolved to a usable model."""


class ModelIntegrityError(IoaError):
    """A model file exists but is corrupt or does not match its expected hash."""


class DomainError(IoaError):
    """A domain name is unknown or its data cannot be loaded."""


class DataError(IoaError):
    """Input data (JSONL, seed files) is missing or malformed."""


class TeacherReplyError(IoaError):
    """The teacher returned something that cannot be used, even after repair and retries."""


class BudgetExceededError(IoaError):
    """The run reached its teacher budget cap; it can be resumed with a larger cap."""


class BudgetError(IoaError):
    """A method of `ioa bench` did not use the same data budget (verified samples, teacher tokens) as IOA."""
