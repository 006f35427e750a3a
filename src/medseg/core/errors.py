"""One exception family for every problem a person can act on.

Each error names *where* (a file, a config field, a case), *what* went wrong and *how to fix it*;
the CLI prints ``str(err)`` on one line and exits with a non-zero status.
"""

from __future__ import annotations

from pathlib import Path


class MedsegError(Exception):
    """Base class: a problem with the user's input, described so it can be fixed.

    Args:
        problem: what is wrong, in a few words.
        where: the file, field or case concerned (optional).
        fix: what to do about it (optional).
    """

    exit_code = 2

    def __init__(self, problem: str, *, where: str | Path | None = None, fix: str | None = None):
        self.problem = problem
        self.where = None if where is None else str(where)
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = []
        if self.where:
            parts.append(f"{self.where}: ")
        parts.append(self.problem.rstrip("."))
        if self.fix:
            parts.append(f" — fix: {self.fix.rstrip('.')}")
        return " ".join("".join(parts).split())


class ConfigError(MedsegError):
    """A config file or override is invalid."""


class DatasetError(MedsegError):
    """A data set folder or one of its cases is invalid."""


class SplitError(MedsegError):
    """A split is invalid (patient leakage, unknown case, bad ratios)."""


class RunError(MedsegError):
    """A run folder is missing, incomplete or would be overwritten."""


class ModelError(MedsegError):
    """A model name, its arguments or its weights are invalid."""


class DependencyError(MedsegError):
    """An optional package is needed for this feature."""


class TrainingError(MedsegError):
    """Training cannot go on (diverged loss, out of memory, incompatible resume)."""


class FormatError(DatasetError):
    """Input in a published format is malformed, inconsistent or unsupported."""


class MedsegWarning(UserWarning):
    """Input that was read with an assumption a person should know about (named, with what was assumed)."""
