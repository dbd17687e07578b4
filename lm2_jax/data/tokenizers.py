"""Tokenizers behind one small interface: bytes, a Hugging Face tokenizer.json, SentencePiece.

The byte-level tokenizer is the zero-setup default: ids 0-255 are the UTF-8 bytes and
256/257/258 are BOS/EOS/PAD, so any text round-trips and nothing has to be downloaded.
A user who has the Llama-3 ``tokenizer.json`` (or any other) points ``load_tokenizer`` at
it. ``encode`` never adds BOS/EOS: the pipelines add them where the format says so.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Sequence

from lm2_jax.data.errors import DataError

# Names under which tokenizer.json files commonly register their special tokens, in order of
# preference. Llama-3 has no padding token; it then pads with EOS (the loss mask hides it).
_BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>", "[BOS]", "<|startoftext|>", "<|endoftext|>")
_EOS_NAMES = ("<|end_of_text|>", "</s>", "<eos>", "[EOS]", "<|endoftext|>")
_PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>")


class Tokenizer(abc.ABC):
  """What the data pipelines and the evaluation need from a tokenizer."""

  name: str = "tokenizer"

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Token ids of ``text``, without BOS or EOS."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Text of ``ids``; special tokens are dropped."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """One more than the largest id this tokenizer can produce."""

  # Special ids: file-backed tokenizers set _bos, _eos and _pad when they load; the byte
  # tokenizer overrides these with its fixed ids.
  @property
  def bos_id(self) -> int:
    return self._bos

  @property
  def eos_id(self) -> int:
    return self._eos

  @property
  def pad_id(self) -> int:
    return self._pad

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def count_tokens(self, texts: Sequence[str]) -> list[int]:
    """Number of tokens of each text (what the BABILong length budget counts)."""
    return [len(ids) for ids in self.encode_batch(texts)]

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.name!r}, vocab_size={self.vocab_size})"


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes as ids 0-255, then BOS=256, EOS=257, PAD=258 (vocab_size 259)."""

  name = "byte"

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids: Sequence[int]) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

  def count_tokens(self, texts: Sequence[str]) -> list[int]:
    return [len(t.encode("utf-8")) for t in texts]

  @property
  def vocab_size(self) -> int:
    return 259

  @property
  def bos_id(self) -> int:
    return 256

  @property
  def eos_id(self) -> int:
    return 257

  @property
  def pad_id(self) -> int:
    return 258


def _special_from_config(folder: str) -> dict[str, str]:
  """bos/eos/pad token strings from a tokenizer_config.json next to tokenizer.json."""
  path = os.path.join(folder, "tokenizer_config.json")
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      cfg = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: not a JSON tokenizer config ({e})") from e
  out = {}
  for key in ("bos_token", "eos_token", "pad_token"):
    value = cfg.get(key)
    if isinstance(value, dict):  # {"content": "<s>", ...} in older configs
      value = value.get("content")
    if isinstance(value, str):
      out[key[:3]] = value
  return out


class HFTokenizer(Tokenizer):
  """A Hugging Face ``tokenizer.json`` (e.g. Llama-3's), read with the ``tokenizers`` library.

  Special tokens come from explicit arguments, else a ``tokenizer_config.json`` in the same
  folder, else the usual names (``<|begin_of_text|>``, ``</s>``, ...). BOS falls back to EOS
  (GPT-2 style) and PAD to EOS; without any EOS the tokenizer is rejected, because packing
  needs a document separator.
  """

  def __init__(self, path: str | os.PathLike, *, bos: str | None = None,
               eos: str | None = None, pad: str | None = None):
    import tokenizers  # pylint: disable=g-import-not-at-top

    path = os.fspath(path)
    if os.path.isdir(path):
      path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(path):
      raise DataError(f"{path}: tokenizer file not found (expected a Hugging Face tokenizer.json)")
    try:
      self._tok = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # the Rust side raises plain Exceptions with a parse message
      raise DataError(f"{path}: not a valid Hugging Face tokenizer.json ({e})") from e
    self.path = path
    self.name = path
    cfg = _special_from_config(os.path.dirname(path))
    self._bos = self._find(bos or cfg.get("bos"), _BOS_NAMES)
    self._eos = self._find(eos or cfg.get("eos"), _EOS_NAMES)
    self._pad = self._find(pad or cfg.get("pad"), _PAD_NAMES)
    if self._eos is None:
      raise DataError(f"{path}: no end-of-text token found (looked for {', '.join(_EOS_NAMES)}); "
                      "pass eos=... to HFTokenizer")
    if self._bos is None:
      self._bos = self._eos
    if self._pad is None:
      self._pad = self._eos
    self._size = self._tok.get_vocab_size(with_added_tokens=True)

  def _find(self, explicit: str | None, names: Sequence[str]) -> int | None:
    if explicit is not None:
      idx = self._tok.token_to_id(explicit)
      if idx is None:
        raise DataError(f"{self.path}: special token {explicit!r} is not in the vocabulary")
      return idx
    for name in names:
      idx = self._tok.token_to_id(name)
      if idx is not None:
        return idx
    return None

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  @property
  def vocab_size(self) -> int:
    return self._size


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece ``.model`` file. Missing BOS/PAD ids fall back to EOS."""

  def __init__(self, path: str | os.PathLike):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    path = os.fspath(path)
    if not os.path.exists(path):
      raise DataError(f"{path}: SentencePiece model not found")
    self.path = path
    self.name = path
    self._sp = spm.SentencePieceProcessor()
    try:
      ok = self._sp.Load(path)
    except Exception as e:  # sentencepiece raises OSError/RuntimeError with the parse message
      raise DataError(f"{path}: not a valid SentencePiece model ({e})") from e
    if not ok:
      raise DataError(f"{path}: not a valid SentencePiece model")
    eos = self._sp.eos_id()
    if eos < 0:
      raise DataError(f"{path}: the SentencePiece model has no EOS piece (expected eos_id >= 0)")
    self._eos = eos
    self._bos = self._sp.bos_id() if self._sp.bos_id() >= 0 else eos
    self._pad = self._sp.pad_id() if self._sp.pad_id() >= 0 else eos

  def __getstate__(self):  # picklable for multi-process data loading
    return {"path": self.path}

  def __setstate__(self, state):
    self.__init__(state["path"])

  def encode(self, text: str) -> list[int]:
    return self._sp.EncodeAsIds(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.Encode(list(texts))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.DecodeIds([int(i) for i in ids])

  @property
  def vocab_size(self) -> int:
    return self._sp.GetPieceSize()


def load_tokenizer(spec: str | os.PathLike | Tokenizer) -> Tokenizer:
  """``"byte"``, a ``tokenizer.json`` (or a folder holding one), or a SentencePiece ``.model``."""
  if isinstance(spec, Tokenizer):
    return spec
  spec = os.fspath(spec)
  if spec in ("byte", "bytes"):
    return ByteTokenizer()
  if os.path.isdir(spec):
    for name in ("tokenizer.json", "tokenizer.model"):
      candidate = os.path.join(spec, name)
      if os.path.exists(candidate):
        return load_tokenizer(candidate)
    raise DataError(f"{spec}: folder holds neither tokenizer.json nor tokenizer.model")
  if not os.path.exists(spec):
    raise DataError(f"{spec}: tokenizer not found (expected 'byte', a tokenizer.json, "
                    "a folder holding one, or a SentencePiece .model)")
  if spec.endswith(".model"):
    return SentencePieceTokenizer(spec)
  return HFTokenizer(spec)


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int) -> None:
  """Raises ``ValueError`` unless every id the tokenizer can produce has a model embedding.

  A model vocabulary larger than the tokenizer's is fine (rounding the embedding table up
  to a multiple of 128 is common); a smaller one would index past the embedding table.
  """
  needed = max(tokenizer.vocab_size, tokenizer.bos_id + 1, tokenizer.eos_id + 1,
               tokenizer.pad_id + 1)
  if model_vocab_size < needed:
    raise ValueError(
        f"model vocab_size={model_vocab_size} is smaller than the tokenizer's {needed} "
        f"({tokenizer!r}); set the model's vocab_size to at least {needed}")
