"""What every command line of the project shares: a mistake is one line and exit code 2,
and large numbers print with a unit prefix."""

from __future__ import annotations

import argparse

_PREFIXES = ("", "K", "M", "G", "T")


def human(x: float, digits: int = 1, binary: bool = False) -> str:
  """12345 -> '12.3K'; with `binary`, a size in bytes: 1536 -> '1.5 KiB', 100 -> '100 B'."""
  base = 1024 if binary else 1000
  i = 0
  while abs(x) >= base and i < len(_PREFIXES) - 1:
    x /= base
    i += 1
  if binary:
    return f"{x:.{digits}f} {_PREFIXES[i]}iB" if i else f"{int(x)} B"
  return f"{x:.{digits}f}{_PREFIXES[i]}" if i else f"{x:.0f}"


class OneLineParser(argparse.ArgumentParser):
  """argparse, but a usage error is one line (argparse prints the usage block first)."""

  def error(self, message: str):
    self.exit(2, f"error: {message} (see {self.prog} --help)\n")
