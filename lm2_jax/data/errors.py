"""The one error type of the data package.

Every loader raises :class:`DataError` for bad input (a missing file, a malformed
record, an unparseable tokenizer) with a message that names the file, the line
or record, and what was expected, so that a command-line entry point can print
that single line and exit with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import os


class DataError(ValueError):
  """Bad input data: the message names the file, the record and the expectation."""


def where(path: str | os.PathLike, record: int | str | None = None) -> str:
  """Formats a location for an error message: ``file`` or ``file, record 12``."""
  loc = os.fspath(path)
  if record is None:
    return loc
  if isinstance(record, int):
    return f"{loc}, record {record}"
  return f"{loc}, {record}"
