"""Random access to documents in .txt, JSONL and parquet files."""

import json
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lm2_jax.data.documents import DocumentSource
from lm2_jax.data.errors import DataError


@pytest.fixture
def corpus(tmp_path):
  (tmp_path / "a.txt").write_text("A whole file is one document.")
  (tmp_path / "b.jsonl").write_text(
      json.dumps({"text": "first line"}) + "\n\n" + json.dumps({"text": "third line"}) + "\n")
  table = pa.table({"text": [f"row {i}" for i in range(10)]})
  pq.write_table(table, tmp_path / "c.parquet", row_group_size=4)
  return tmp_path


def test_every_document_in_order(corpus):
  src = DocumentSource(corpus)
  assert len(src) == 1 + 2 + 10
  assert [src[i] for i in range(len(src))] == (
      ["A whole file is one document.", "first line", "third line"] +
      [f"row {i}" for i in range(10)])
  assert src.describe(2).endswith("b.jsonl, line 3")
  assert src.describe(9).endswith("c.parquet, row 6")
  again = pickle.loads(pickle.dumps(src))
  assert again[12] == "row 9"


def test_bad_records_name_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"text": "ok"}\n{"text": 3}\n{"text": \n')
  src = DocumentSource(path)
  assert src[0] == "ok"
  with pytest.raises(DataError, match=r"bad.jsonl, line 2: expected a JSON object with a string "
                     "'text' field"):
    src[1]
  with pytest.raises(DataError, match=r"bad.jsonl, line 3: not valid JSON"):
    src[2]


def test_missing_empty_and_unsupported_inputs(tmp_path):
  with pytest.raises(DataError, match="file not found"):
    DocumentSource(tmp_path / "nope.jsonl")
  with pytest.raises(DataError, match="no .txt/.jsonl/.json/.parquet files in this folder"):
    DocumentSource(tmp_path)
  (tmp_path / "x.csv").write_text("a,b")
  with pytest.raises(DataError, match="x.csv: unsupported file type"):
    DocumentSource(tmp_path / "x.csv")
  pq.write_table(pa.table({"body": ["x"]}), tmp_path / "y.parquet")
  with pytest.raises(DataError, match=r"y.parquet: no 'text' column"):
    DocumentSource(tmp_path / "y.parquet")
