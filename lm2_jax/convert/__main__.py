"""`python -m lm2_jax.convert import-hf|export-hf ...`: Hugging Face Llama <-> work directory.

    import-hf --hf-dir DIR --out WORKDIR [--config CFG] [key=value ...]
        A LlamaForCausalLM folder -> a new work directory with a params-only checkpoint
        (step 0) that training continues from and evaluation reads. The architecture comes
        from config.json; --config and the overrides give the rest (memory, training).
    export-hf --checkpoint DIR --out HF_DIR [--dtype float32|bfloat16|float16]
        A work directory (latest step) or step directory -> a folder transformers loads.

Bad input gives one line naming the file and tensor, and exit code 2.
"""

from __future__ import annotations

import sys
import time

from lm2_jax.checkpoint import CheckpointError
from lm2_jax.cli import OneLineParser
from lm2_jax.config import ConfigError, load_config, to_dict
from lm2_jax.convert.hf_io import EXPORT_DTYPES, export_hf, import_hf, parse_size
from lm2_jax.convert.mapping import ConvertError
from lm2_jax.summary import describe_memory


def _note(msg: str):
  print(msg, file=sys.stderr)


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _import(args) -> int:
  # Without --config the import is a plain Llama; model.memory.kind=lm2 (or rmt) adds a memory.
  base = None
  if args.config or args.overrides:
    defaults = [] if args.config else ["model.memory.kind=none"]
    base = load_config(args.config, defaults + list(args.overrides))
  start = time.time()
  cfg = import_hf(args.hf_dir, args.out, base=base,
                  compute_dtype=base.model.compute_dtype if base else "float32", log=_note)
  if args.config:
    before, after = _flat(to_dict(base)), _flat(to_dict(cfg))
    for key in sorted(k for k in before if before[k] != after.get(k)):
      _note(f"note: {key}={before[key]!r} from {args.config} replaced by {after[key]!r} "
            f"from {args.hf_dir}")
  m = cfg.model
  print(f"imported {args.hf_dir} -> {args.out} (step 0): {m.num_layers} layers, width "
        f"{m.width}, vocab {m.vocab_size}, memory {describe_memory(m)}, in "
        f"{time.time() - start:.1f} s")
  return 0


def _export(args) -> int:
  start = time.time()
  cfg = export_hf(args.checkpoint, args.out, args.dtype, parse_size(args.max_shard_size))
  if cfg.model.memory.kind != "none" or cfg.model.attention_scope != "full":
    _note("note: transformers computes this folder as a plain Llama with full attention; "
          "the memory and segment settings travel in config.json's lm2_memory entry")
  print(f"exported {args.checkpoint} -> {args.out} ({args.dtype}) in "
        f"{time.time() - start:.1f} s")
  return 0


def main(argv=None) -> int:
  parser = OneLineParser(prog="python -m lm2_jax.convert",
                         description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
  imp = sub.add_parser("import-hf", help="Hugging Face Llama folder -> work directory")
  imp.add_argument("--hf-dir", required=True, help="folder with config.json and *.safetensors")
  imp.add_argument("--out", required=True, help="new work directory")
  imp.add_argument("--config", help="YAML config for the memory and training settings")
  imp.add_argument("overrides", nargs="*", help="dotted key=value overrides")
  exp = sub.add_parser("export-hf", help="work directory -> Hugging Face Llama folder")
  exp.add_argument("--checkpoint", required=True, help="work directory or step directory")
  exp.add_argument("--out", required=True, help="new folder")
  exp.add_argument("--dtype", default="float32", choices=sorted(EXPORT_DTYPES))
  exp.add_argument("--max-shard-size", default="2GB",
                   help="largest safetensors file before sharding (default 2GB)")
  args = parser.parse_args(argv)
  try:
    return _import(args) if args.command == "import-hf" else _export(args)
  except (ConvertError, ConfigError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # a full or failing disk while writing: nothing was published
    print(f"error: {args.command} --out {args.out}: {e.strerror or e} "
          f"({getattr(e, 'filename', None) or 'writing'})", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
