"""Pretraining sources through Grain: packing, sharding, shuffling, resume, TFDS."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

from lm2_jax.data.errors import DataError
from lm2_jax.data.pretrain import TokenShardSource, make_lm_dataset
from lm2_jax.data.tokenizers import ByteTokenizer

TOK = ByteTokenizer()
DOCS = [f"document {i} " + "abcdefghij"[: i % 10] * (i % 7) for i in range(40)]


def framed(docs):
  return np.concatenate([[256] + list(d.encode()) + [257] for d in docs]).astype(np.int32)


def stream(ds, n):
  it = iter(ds)
  return np.concatenate([next(it)["tokens"].reshape(-1) for _ in range(n)])


@pytest.fixture
def jsonl(tmp_path):
  path = tmp_path / "docs.jsonl"
  path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
  return str(path)


def test_documents_are_framed_and_packed_in_order(jsonl):
  ds = make_lm_dataset(jsonl, TOK, seq_len=16, batch_size=2, shuffle=False, num_epochs=1)
  batches = list(ds)
  expected = framed(DOCS)
  assert len(batches) == len(expected) // 32  # the partial tail is dropped
  got = np.concatenate([b["tokens"].reshape(-1) for b in batches])
  np.testing.assert_array_equal(got, expected[:len(got)])
  assert all(b["tokens"].dtype == np.int32 and b["loss_mask"].dtype == np.float32 and
             (b["loss_mask"] == 1).all() for b in batches)


@pytest.mark.parametrize("kind", ["txt", "parquet"])
def test_text_and_parquet_sources(tmp_path, kind):
  if kind == "txt":
    for i, d in enumerate(DOCS[:5]):
      (tmp_path / f"{i:02d}.txt").write_text(d)
    source = str(tmp_path)
  else:
    pq.write_table(pa.table({"text": DOCS[:5]}), tmp_path / "d.parquet", row_group_size=2)
    source = str(tmp_path / "d.parquet")
  got = stream(make_lm_dataset(source, TOK, 8, 1, shuffle=False), 5)
  np.testing.assert_array_equal(got, framed(DOCS[:5])[:40])


def test_shuffle_is_seeded_and_differs_per_epoch(jsonl):
  n = len(framed(DOCS)) // 8
  one = stream(make_lm_dataset(jsonl, TOK, 8, 1, seed=3), 2 * n)
  assert not np.array_equal(one[:8 * n], framed(DOCS)[:8 * n])
  np.testing.assert_array_equal(one, stream(make_lm_dataset(jsonl, TOK, 8, 1, seed=3), 2 * n))
  assert not np.array_equal(one, stream(make_lm_dataset(jsonl, TOK, 8, 1, seed=4), 2 * n))
  # Epoch 1 holds every document once, in a different order from epoch 2.
  docs = TOK.decode(one).split("document ")[1:]
  first_epoch = [d.split(" ")[0] for d in docs[:len(DOCS)]]
  assert sorted(map(int, first_epoch)) == list(range(len(DOCS)))
  second = [d.split(" ")[0] for d in docs[len(DOCS):2 * len(DOCS) - 2]]
  assert second != first_epoch[:len(second)]


def test_hosts_read_disjoint_documents(jsonl):
  parts = [TOK.decode(stream(make_lm_dataset(jsonl, TOK, 8, 1, shuffle=False, shard_index=h,
                                             shard_count=2), 20)) for h in (0, 1)]
  ids = [{int(d.split(" ")[0]) for d in p.split("document ")[1:-1]} for p in parts]
  assert ids[0] and ids[1] and all(i % 2 == 0 for i in ids[0]) and all(i % 2 for i in ids[1])


@pytest.mark.parametrize("num_threads", [0, 2])
def test_resume_sees_exactly_the_same_batches(jsonl, num_threads):
  ds = make_lm_dataset(jsonl, TOK, 24, 3, seed=9, num_threads=num_threads)
  it = iter(ds)
  for _ in range(7):
    next(it)
  state = it.get_state()
  assert state["offset"] > 0  # the cut falls inside a document
  json.dumps(state)  # small and serializable for checkpoints
  expected = [next(it)["tokens"] for _ in range(25)]  # crosses an epoch boundary
  fresh = iter(ds)
  fresh.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(fresh)["tokens"], e)


def _llmc(path, tokens, dtype, magic):
  header = np.zeros(256, np.int32)
  header[:3] = [magic, 1, len(tokens)]
  with open(path, "wb") as f:
    f.write(header.tobytes())
    f.write(np.asarray(tokens, dtype).tobytes())


def test_token_shards(tmp_path):
  a = np.arange(100, dtype=np.uint16)
  a.tofile(tmp_path / "a.bin")
  _llmc(tmp_path / "b.bin", np.arange(1000, 1050), np.uint32, 20240801)
  np.save(tmp_path / "c.npy", np.arange(2000, 2030, dtype=np.int64))
  src = TokenShardSource(str(tmp_path), seq_len=10)
  assert len(src) == 10 + 5 + 3
  np.testing.assert_array_equal(src[3], np.arange(30, 40))
  np.testing.assert_array_equal(src[10], np.arange(1000, 1010))
  np.testing.assert_array_equal(src[17], np.arange(2020, 2030))
  big = np.arange(64, dtype=np.uint32) + 70000
  big.tofile(tmp_path / "wide.bin")
  wide = TokenShardSource(str(tmp_path / "wide.bin"), seq_len=16, token_dtype="uint32")
  np.testing.assert_array_equal(wide[1], big[16:32].astype(np.int32))


def test_token_shard_pipeline_resume_and_vocab_check(tmp_path):
  np.arange(256 * 10, dtype=np.uint16).__mod__(256).astype(np.uint16).tofile(tmp_path / "t.bin")
  ds = make_lm_dataset(str(tmp_path / "t.bin"), TOK, 32, 4, seed=1)
  it = iter(ds)
  first = next(it)
  assert first["tokens"].shape == (4, 32) and (first["loss_mask"] == 1).all()
  state = it.get_state()
  expected = [next(it)["tokens"] for _ in range(6)]
  fresh = iter(ds)
  fresh.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(fresh)["tokens"], e)
  (np.arange(64, dtype=np.uint16) + 250).tofile(tmp_path / "oov.bin")
  with pytest.raises(DataError, match=r"oov.bin, token 9: id 259 is outside the tokenizer's "
                     "vocabulary of 259"):
    TokenShardSource(str(tmp_path / "oov.bin"), 32, vocab_size=259)[0]
  (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
  with pytest.raises(DataError, match="odd.bin: 3 bytes is not a whole number of uint16 tokens"):
    TokenShardSource(str(tmp_path / "odd.bin"), 1)


class TinyTextCorpus(tfds.core.GeneratorBasedBuilder):
  """Thirty short documents, built offline in the test."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self,
                                 features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, d in enumerate(DOCS[:30]):
      yield i, {"text": d}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  builder = TinyTextCorpus(data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return data_dir


def test_tfds_array_record_source(tfds_dir):
  ds = make_lm_dataset("tfds:tiny_text_corpus", TOK, 16, 2, shuffle=False, num_epochs=1,
                       tfds_data_dir=str(tfds_dir))
  got = np.concatenate([b["tokens"].reshape(-1) for b in ds])
  # TFDS stores the examples in its own (hashed) order: compare the documents, not the order.
  docs = TOK.decode(got).split("document ")[1:-1]
  assert {int(d.split(" ")[0]) for d in docs} <= set(range(30)) and len(docs) >= 20
  by_path = make_lm_dataset(f"tfds:{tfds_dir}/tiny_text_corpus/1.0.0", TOK, 16, 2,
                            shuffle=False, num_epochs=1)
  np.testing.assert_array_equal(np.concatenate([b["tokens"].reshape(-1) for b in by_path]), got)
  it = iter(make_lm_dataset("tfds:tiny_text_corpus", TOK, 16, 2, seed=5,
                            tfds_data_dir=str(tfds_dir)))
  next(it)
  state = it.get_state()
  expected = [next(it)["tokens"] for _ in range(12)]
  fresh = iter(make_lm_dataset("tfds:tiny_text_corpus", TOK, 16, 2, seed=5,
                               tfds_data_dir=str(tfds_dir)))
  fresh.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(fresh)["tokens"], e)


def test_unknown_tfds_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(DataError, match="tfds:no_such_corpus split 'train'"):
    make_lm_dataset("tfds:no_such_corpus", TOK, 16, 2, tfds_data_dir=str(tmp_path))
