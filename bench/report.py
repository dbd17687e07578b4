"""Markdown tables of a bench/run.py JSON file (what docs/performance.md shows).

    python bench/report.py bench.json
"""

from __future__ import annotations

import json
import sys


def _f(x, fmt="{:.2f}"):
  return "-" if x is None else fmt.format(x)


def tables(result: dict) -> str:
  recs = [r for r in result["records"] if "error" not in r and "skipped" not in r]
  out = [f"suite `{result['suite']}`, {result['seconds'] / 60:.1f} min, "
         f"{result['machine']['cpus']} CPUs, jax {result['machine']['jax']}", ""]
  peaks = [r for r in recs if r["benchmark"] == "peak"]
  if peaks:
    out += ["| matmul 1536^3 | GFLOP/s |", "|---|---|"]
    out += [f"| {r['dtype']} | {r['matmul_gflops_per_s']:.0f} |" for r in peaks] + [""]
  steps = [r for r in recs if r["benchmark"] == "train_step"]
  if steps:
    out += ["| config | variant | step s | tok/s | MFU | HFU | time ratio | executed-FLOP ratio "
            "| efficiency |", "|---|---|---|---|---|---|---|---|---|"]
    for r in steps:
      eff = r["time_ratio_to_reference"] / r["flop_ratio_to_reference"]
      out.append(f"| {r['config'].split('/')[-1]} | {r['variant']} (vs {r['reference']}) | "
                 f"{r['median_s']:.3f} | {r['tokens_per_s']:.0f} | "
                 f"{100 * r['mfu_vs_measured_peak']:.1f}% | {100 * r['hfu_vs_measured_peak']:.1f}% | "
                 f"{r['time_ratio_to_reference']:.2f} | {r['flop_ratio_to_reference']:.2f} | "
                 f"{eff:.2f} |")
    out.append("")
  mem = [r for r in recs if r["benchmark"] == "memory_ops"]
  if mem:
    out += ["| slots | attention ms | MLP ms | read ms | write ms | read / attention | "
            "write / attention | (read + write) / (attention + MLP) |",
            "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['slots']} | {1e3 * r['attention_s']:.1f} | {1e3 * r['mlp_s']:.1f} | "
            f"{1e3 * r['read_s']:.1f} | {1e3 * r['write_s']:.1f} | {r['read_over_attention']:.2f} | "
            f"{r['write_over_attention']:.2f} | {r['memory_over_attention_mlp']:.2f} |"
            for r in mem] + [""]
  ctx = [r for r in recs if r["benchmark"] == "context"]
  if ctx:
    out += ["| scope | length | prompt tokens | s | us / token | per-token ratio to 4k "
            "| peak host MiB |", "|---|---|---|---|---|---|---|"]
    out += [f"| {r['attention_scope']} | {r['length']} | {r['prompt_tokens']} | "
            f"{r['median_s']:.2f} | {1e6 * r['seconds_per_token']:.1f} | "
            f"{r['per_token_ratio_to_reference']:.2f} | "
            f"{_f(r['peak_host_bytes'] and r['peak_host_bytes'] / 2**20, '{:.0f}')} |"
            for r in ctx] + [""]
  ref = [r for r in recs if r["benchmark"] == "reference" and r.get("kind") in
         ("train_step", "forward")]
  if ref:
    out += ["| | ours s | transformers s | ours tok/s | transformers tok/s | speedup |",
            "|---|---|---|---|---|---|"]
    out += [f"| {r['kind']} | {r['ours']['median_s']:.3f} | {r['transformers_']['median_s']:.3f} "
            f"| {r['ours_tokens_per_s']:.0f} | {r['transformers_tokens_per_s']:.0f} | "
            f"{r['speedup_vs_transformers']:.2f}x |" for r in ref] + [""]
  for r in recs:
    if r["benchmark"] == "reference" and r.get("kind") == "gemms":
      out += ["| product (batch, m, k, n) | per step | ours GFLOP/s | torch GFLOP/s "
              "| speedup |", "|---|---|---|---|---|"]
      out += [f"| {p['name']} ({', '.join(map(str, p['shape']))}) | {p['count']} | "
              f"{p['ours_gflops']:.0f} | {p['torch_gflops']:.0f} | "
              f"{p['speedup_vs_torch']:.2f}x |" for p in r["products"]]
      out += [f"| one step's products | | {r['ours_step_gemm_s']:.3f} s | "
              f"{r['torch_step_gemm_s']:.3f} s | {r['gemm_speedup_vs_torch']:.2f}x |", ""]
  acc = [r for r in recs if r["benchmark"] == "accelerator"]
  if acc:
    out += ["| variant | batch x length | remat | attention | step s | tok/s | MFU (datasheet) "
            "| HFU (datasheet) | of measured bf16 peak | temporaries GiB |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['variant']} | {r['batch']} x {r['seq_len']} | {r['remat']} | "
            f"{r['attention_impl']} | {r['median_s']:.3f} | {r['tokens_per_s']:.0f} | "
            f"{_f(r['mfu_vs_datasheet'] and 100 * r['mfu_vs_datasheet'], '{:.1f}%')} | "
            f"{_f(r['hfu_vs_datasheet'] and 100 * r['hfu_vs_datasheet'], '{:.1f}%')} | "
            f"{100 * r['mfu_vs_measured_peak']:.1f}% | "
            f"{_f(r.get('temp_bytes') and r['temp_bytes'] / 2**30, '{:.1f}')} |"
            for r in acc] + [""]
  out += [f"- {r['benchmark']}{' ' + r['variant'] if 'variant' in r else ''}: "
          f"{r.get('error') or r.get('skipped')}" for r in result["records"]
          if "error" in r or "skipped" in r]
  h = result["headline"]
  out += ["| headline | value |", "|---|---|"]
  for k, v in h.items():
    if isinstance(v, dict):  # one value per accelerator variant
      out += [f"| {k}: {name} | {_f(x, '{:.3f}')} |" for name, x in v.items()]
    elif k != "notes":
      out.append(f"| {k} | {_f(v, '{:.3f}') if not isinstance(v, str) else v} |")
  return "\n".join(out)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    print("usage: python bench/report.py bench.json", file=sys.stderr)
    return 2
  try:
    with open(argv[0], encoding="utf-8") as f:
      result = json.load(f)
  except (OSError, ValueError) as e:
    print(f"{argv[0]}: cannot read a bench/run.py result ({e})", file=sys.stderr)
    return 2
  print(tables(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
