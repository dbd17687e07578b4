"""Writing results: atomic JSON/CSV files, append-only prediction logs, intervals, text tables.

Nothing a run writes is ever left half-written: summaries go to a temporary file that is
renamed over the target once complete, and a prediction log only ever gains whole rows (a
row cut short by an interruption is dropped when the log is reopened), which is what makes
an interrupted evaluation resumable.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any


class EvaluationError(ValueError):
  """A request the evaluation cannot serve; the message names the file or option."""


# --- files -------------------------------------------------------------------------------------
def write_atomic(path: str, text: str | bytes):
  """Write `text` to `path` through a temporary file in the same folder and a rename."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=folder)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual mode
    with os.fdopen(fd, "wb") as f:
      f.write(text.encode("utf-8") if isinstance(text, str) else text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, data: Any):
  write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]):
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  write_atomic(path, buf.getvalue())


def save_figure(fig, path: str):
  """Save a matplotlib figure as PNG atomically."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  write_atomic(path, buf.getvalue())


class PredictionLog:
  """An append-only CSV of per-sample rows, the journal an interrupted run resumes from.

  `rows()` returns the complete rows already written; `append(rows)` adds whole rows and
  flushes them to disk. A last row cut short by an interruption (even inside a UTF-8
  character) is dropped when the log is opened.
  """

  def __init__(self, path: str, header: Sequence[str]):
    self.path, self.header = path, list(header)
    self._rows: list[dict[str, str]] = []
    if not os.path.exists(path):
      return
    with open(path, "rb") as f:
      data = f.read()
    try:
      text = data.decode("utf-8")
    except UnicodeDecodeError as e:  # cut inside a character: the rows before it count
      text = data[:e.start].decode("utf-8")
    # Keep the longest run of rows that re-serialise to exactly the text on disk (the
    # writer's format is canonical); whatever follows was cut short and is dropped.
    parsed, end = [], 0
    reader = csv.reader(io.StringIO(text))
    while True:
      try:
        row = next(reader)
      except (StopIteration, csv.Error):
        break
      line = _csv_line(row)
      if not text.startswith(line, end):
        break
      parsed.append(row)
      end += len(line)
    if parsed and parsed[0] != self.header:
      raise EvaluationError(f"{path}: columns {parsed[0]} differ from {self.header}; move the "
                            "file away or choose another --output")
    if end != len(text):
      write_atomic(path, text[:end])
    self._rows = [dict(zip(self.header, r)) for r in parsed[1:]]

  def rows(self) -> list[dict[str, str]]:
    return list(self._rows)

  def append(self, rows: Sequence[Sequence[Any]]):
    new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
    if new:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    text = "".join(_csv_line(r) for r in ([self.header] if new else []) + list(rows))
    with open(self.path, "a", encoding="utf-8", newline="") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    self._rows += [dict(zip(self.header, map(str, r))) for r in rows]


def _csv_line(row: Sequence[Any]) -> str:
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerow(row)
  return buf.getvalue()


# --- statistics --------------------------------------------------------------------------------
def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
  """95% Wilson score interval of a proportion (sensible at 0/n and n/n, unlike Wald's)."""
  if n == 0:
    return (0.0, 1.0)
  p = correct / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return (max(0.0, centre - half), min(1.0, centre + half))


# --- text tables -------------------------------------------------------------------------------
def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
  """A plain aligned table: first column left-aligned, the others right-aligned."""
  cells = [[str(h) for h in header]] + [[_cell(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

  def line(r):
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(r, widths))).rstrip()

  out = [title] if title else []
  out += [line(cells[0]), "  ".join("-" * w for w in widths)]
  out += [line(r) for r in cells[1:]]
  return "\n".join(out)


def _cell(x: Any) -> str:
  if x is None:
    return "-"
  if isinstance(x, float):
    return f"{x:.1f}"
  return str(x)


def percent(x: float | None) -> float | None:
  return None if x is None else 100.0 * x
