"""Background text: the built-in generator, .txt folders and PG19 layouts."""

import itertools
import json
import logging
import random
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lm2_jax.data.errors import DataError
from lm2_jax.data.haystack import (FORBIDDEN_WORDS, GeneratedHaystack, load_haystack, load_pg19,
                                   load_text_folder, mentions_task_entity, split_sentences)

BOOK = ("It was a dark night.  The captain\nwatched the sea! Mary went to the kitchen. "
        "Short one. \"Why?\" asked the cook quietly. The garden lay still under snow. "
        "A long silence followed the storm.")


def _take(haystack, seed, n):
  return list(itertools.islice(haystack.sentences(random.Random(seed)), n))


def test_generated_sentences_avoid_every_task_word():
  for s in _take(GeneratedHaystack(), 0, 20000):
    words = set(re.findall(r"[a-z']+", s.lower()))
    assert not words & FORBIDDEN_WORDS, s
    assert s[0].isupper() and s[-1] in ".!"


def test_generated_text_is_varied_and_seeded():
  sentences = _take(GeneratedHaystack(), 1, 5000)
  assert len(set(sentences)) > 4990
  assert _take(GeneratedHaystack(), 1, 50) == sentences[:50]
  assert _take(GeneratedHaystack(), 2, 50) != sentences[:50]


def test_split_sentences_and_entity_filter():
  sents = split_sentences(BOOK)
  assert sents[1] == "The captain watched the sea!"  # hard line breaks are joined
  assert "Mary went to the kitchen." in sents
  assert mentions_task_entity("Mary went home.") and mentions_task_entity("THE GARDEN.")
  assert not mentions_task_entity("The gardener and the marygold.")  # whole words only


def test_text_folder_drops_entity_sentences_and_counts_them(tmp_path, caplog):
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "book.txt").write_text(BOOK)
  hay = load_text_folder(tmp_path)
  with caplog.at_level(logging.INFO, logger="lm2_jax.data.haystack"):
    got = set(_take(hay, 0, 50))
  assert got == {"It was a dark night.", "The captain watched the sea!",
                 "\"Why?\" asked the cook quietly.", "A long silence followed the storm."}
  assert (hay.dropped_entity, hay.dropped_length) == (2, 1)
  assert "dropped 2 that name a task entity and 1 shorter than 3" in caplog.text


def test_empty_or_missing_text_folder_is_an_error(tmp_path):
  with pytest.raises(DataError, match="no .txt files found"):
    load_text_folder(tmp_path)
  with pytest.raises(DataError, match="not found"):
    load_haystack(str(tmp_path / "missing"))


def test_folder_whose_every_sentence_is_dropped_is_an_error(tmp_path):
  (tmp_path / "a.txt").write_text("Mary went to the kitchen. John took the apple there.")
  with pytest.raises(DataError, match="no usable background sentence"):
    _take(load_text_folder(tmp_path), 0, 1)


def test_pg19_deepmind_layout(tmp_path):
  for split in ("train", "test"):
    (tmp_path / split).mkdir()
    (tmp_path / split / "123.txt").write_text(f"The {split} book opens here. It ends here.")
  hay = load_haystack(f"pg19:{tmp_path}")
  assert set(_take(hay, 0, 10)) == {"The test book opens here.", "It ends here."}
  hay = load_pg19(tmp_path, "train")
  assert "The train book opens here." in set(_take(hay, 0, 10))


def test_pg19_parquet_and_jsonl_layouts(tmp_path):
  (tmp_path / "data").mkdir()
  table = pa.table({"text": ["The first parquet book. It has two lines.", "Another book here."],
                    "id": ["1", "2"]})
  pq.write_table(table, tmp_path / "data" / "test-00000-of-00001.parquet")
  pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
  hay = load_pg19(tmp_path, "test")
  assert len(hay.documents) == 2
  assert set(_take(hay, 0, 20)) == {"The first parquet book.", "It has two lines.",
                                    "Another book here."}
  jl = tmp_path / "jl"
  jl.mkdir()
  (jl / "books.jsonl").write_text(json.dumps({"text": "A jsonl book lies here."}) + "\n")
  assert _take(load_pg19(jl), 0, 1) == ["A jsonl book lies here."]
  with pytest.raises(DataError, match="no PG19 'validation' data"):
    load_pg19(tmp_path, "validation")
