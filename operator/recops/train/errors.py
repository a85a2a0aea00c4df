"""Errors of the trainer that name their cause in one line (the trainer turns them into its
exit status and termination message)."""

from __future__ import annotations


def one_line(text: object, limit: int = 300) -> str:
    """The first non-empty line of a message, shortened: termination messages are small."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else type(text).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class DataError(Exception):
    """Bad input data; str(e) is a one-line cause."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message, limit=500))
