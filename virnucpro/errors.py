"""Errors that end a run with one clear line (file, record or key, problem) and a non-zero exit."""

from __future__ import annotations


class VirNucProError(Exception):
    """Base class: the CLI prints str(error) on one line and exits with `exit_code`."""

    exit_code = 1


class InputError(VirNucProError):
    """Bad input data: names the file, the record (when known) and the problem."""

    exit_code = 2

    def __init__(self, path, problem: str, record: str | None = None, line: int | None = None):
        self.path = str(path)
        self.problem = problem
        self.record = record
        self.line = line
        where = self.path
        if line is not None:
            where += f":{line}"
        if record is not None:
            where += f": record '{record}'"
        super().__init__(f"{where}: {problem}")


class ModelError(VirNucProError):
    """A missing, unreadable or wrongly shaped model file: names the file and the key."""

    exit_code = 3

    def __init__(self, path, problem: str, key: str | None = None):
        self.path = str(path)
        self.key = key
        where = self.path if key is None else f"{self.path}: key '{key}'"
        super().__init__(f"{where}: {problem}")


class RunStateError(VirNucProError):
    """A run directory that cannot be resumed as asked (other models, input, chunk length...)."""

    exit_code = 4
