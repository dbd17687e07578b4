"""The pictures, headless (matplotlib's Agg canvas, no pyplot state): accuracy against context
length per task, the radar chart of the paper's Figure 3 capability groups, memory read-attention
heatmaps (Figure 6) and loss per segment index. Each writes one PNG atomically."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lm2_jax.data import babilong as bl
from lm2_jax.evaluation.babilong import CAPABILITIES, summarize
from lm2_jax.evaluation.report import save_figure


def _figure(width: float, height: float, **kwargs) -> Figure:
  fig = Figure(figsize=(width, height), **kwargs)
  FigureCanvasAgg(fig)
  return fig


def accuracy_vs_length(models: dict[str, dict], path: str):
  """One panel per task: accuracy (official rule, 95% interval as error bars) against the
  context length, one line per model."""
  tasks = list(dict.fromkeys(t for r in models.values() for t in r))
  lengths = sorted({x for r in models.values() for by in r.values() for x in by},
                   key=bl.parse_length)
  cols = min(len(tasks), 5)
  rows = -(-len(tasks) // cols)
  fig = _figure(3.2 * cols, 2.8 * rows, layout="constrained")
  axes = fig.subplots(rows, cols, squeeze=False)
  xs = np.arange(len(lengths))
  for i, task in enumerate(tasks):
    ax = axes[i // cols][i % cols]
    for name, res in models.items():
      by = res.get(task, {})
      pts = [(x, by[length]) for x, length in zip(xs, lengths) if length in by]
      if not pts:
        continue
      x = np.array([p[0] for p in pts])
      acc = np.array([p[1]["accuracy"] for p in pts]) * 100
      lo = np.array([p[1]["ci95"][0] for p in pts]) * 100
      hi = np.array([p[1]["ci95"][1] for p in pts]) * 100
      ax.errorbar(x, acc, yerr=[acc - lo, hi - acc], marker="o", capsize=2, label=name)
    ax.set_title(task)
    ax.set_xticks(xs, lengths, rotation=45)
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    if i % cols == 0:
      ax.set_ylabel("accuracy (%)")
  for j in range(len(tasks), rows * cols):
    axes[j // cols][j % cols].set_visible(False)
  axes[0][0].legend(fontsize="small")
  fig.suptitle("BABILong accuracy against context length")
  save_figure(fig, path)


def capability_radar(models: dict[str, dict], path: str):
  """The capability groups of the paper's Figure 3 on a radar chart, one polygon per model.
  A group none of whose tasks was evaluated is drawn at 0 and marked '(not evaluated)'."""
  groups = list(CAPABILITIES)
  angles = np.linspace(0, 2 * math.pi, len(groups), endpoint=False)
  fig = _figure(5.5, 5.5)
  ax = fig.add_subplot(projection="polar")
  ax.set_theta_offset(math.pi / 2)  # the first group at the top, then clockwise
  ax.set_theta_direction(-1)
  evaluated = set()
  for name, res in models.items():
    caps = summarize(res)["capabilities"]
    vals = np.array([100 * (caps[g] or 0.0) for g in groups])
    evaluated |= {g for g in groups if caps[g] is not None}
    ax.plot(np.append(angles, angles[0]), np.append(vals, vals[0]), marker="o", label=name)
    ax.fill(np.append(angles, angles[0]), np.append(vals, vals[0]), alpha=0.15)
  labels = [g if g in evaluated else f"{g}\n(not evaluated)" for g in groups]
  ax.set_xticks(angles, labels, fontsize="small")
  ax.set_ylim(0, 100)
  ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize="small")
  ax.set_title("BABILong capabilities (mean accuracy %, all lengths)", pad=20)
  save_figure(fig, path)


def memory_heatmaps(before: np.ndarray, after: np.ndarray, labels: list[str], path: str,
                    max_layers: int = 4):
  """Tokens (rows) x slots (columns) read weights, before and after the memory update, side
  by side for up to `max_layers` memory layers (the first, the last and evenly between)."""
  layers = before.shape[0]
  picked = sorted(set(np.linspace(0, layers - 1, min(layers, max_layers)).round().astype(int)))
  t, n = before.shape[1], before.shape[2]
  panel_w, height = 0.9 + 0.09 * n, min(9.0, 1.5 + 0.13 * t)
  fig = _figure(2 * len(picked) * panel_w + 1.5, height, layout="constrained")
  axes = fig.subplots(1, 2 * len(picked), squeeze=False)[0]
  step = max(1, -(-t // int(height * 7)))  # labels at most about 7 per inch
  vmin = float(min(before[picked].min(), after[picked].min()))
  vmax = float(max(before[picked].max(), after[picked].max()))
  for i, layer in enumerate(picked):
    for j, (maps, when) in enumerate(((before, "before"), (after, "after"))):
      ax = axes[2 * i + j]
      im = ax.imshow(maps[layer], aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax,
                     interpolation="nearest")
      ax.set_title(f"layer {layer}\n{when} update", fontsize="small")
      ax.set_xlabel("slot", fontsize="small")
      ax.tick_params(axis="x", labelsize=6)
      if i == 0 and j == 0:
        ax.set_yticks(np.arange(0, t, step), labels[::step], fontsize=6)
      else:
        ax.set_yticks([])
  fig.colorbar(im, ax=axes, shrink=0.6, label="read weight")
  fig.suptitle("Memory read attention, tokens x slots (mean over heads)")
  save_figure(fig, path)


def loss_per_segment(models: dict[str, dict], path: str):
  """Loss against segment index, one line per model."""
  fig = _figure(6, 3.5, layout="constrained")
  ax = fig.add_subplot()
  for name, rep in models.items():
    segs = [c["segment"] for c in rep["by_segment"]]
    ax.plot(segs, [c["loss"] for c in rep["by_segment"]], marker="o", label=name)
  ax.set_xlabel("segment index")
  ax.set_ylabel("loss (nats/token)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  ax.set_title("Loss per segment index")
  save_figure(fig, path)
