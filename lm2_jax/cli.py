"""What every command line of the project shares: a mistake is one line and exit code 2."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
  """argparse, but a usage error is one line (argparse prints the usage block first)."""

  def error(self, message: str):
    self.exit(2, f"error: {message} (see {self.prog} --help)\n")
