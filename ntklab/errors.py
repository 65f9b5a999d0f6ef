"""Errors the CLI reports as clear messages with a non-zero exit, never as tracebacks."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where it is (file, line, dotted field path) and what was expected."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class SpecError(Exception):
    """A spec that cannot be run. Carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(Exception):
    """A command-line request that cannot be served (unknown run key, ambiguous prefix, bad filter)."""


class DatabaseError(Exception):
    """The database is unreachable, of the wrong schema version, or otherwise unusable."""
