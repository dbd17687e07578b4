"""Background text for BABILong: a built-in narrative generator, folders of .txt files, PG19.

A haystack hands out an endless stream of sentences that starts at a position drawn from the
caller's ``random.Random``; BABILong seeds that generator per sample, so sample i never depends
on samples 0..i-1 and the same seed gives the same text.

The default needs nothing installed: a seeded generator of varied narrative sentences whose
vocabulary never contains a task's names, rooms, objects or verbs (``FORBIDDEN_WORDS``). Real
text (PG19 as DeepMind distributes it, or any folder of .txt files) is split into sentences,
and sentences that mention a task's entities are dropped, with a count in the log.
"""

from __future__ import annotations

import abc
import glob
import logging
import os
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator

from lm2_jax.data import babi
from lm2_jax.data.documents import DocumentSource
from lm2_jax.data.errors import DataError

log = logging.getLogger(__name__)

# Words of the bAbI tasks that the generated background never uses: names, places and objects
# (babi.ENTITY_WORDS), every verb form of the actions and statements, the relation words and
# the answer labels. Real text is filtered only on ENTITY_WORDS (dropping every sentence with
# "went" or "is" would leave almost nothing of a book).
FORBIDDEN_WORDS = babi.ENTITY_WORDS | frozenset("""
    go goes going gone went journey journeyed journeys travel travels travelled traveled
    traveling travelling move moves moved moving get gets got getting grab grabs grabbed
    pick picks picked take takes took taken drop drops dropped discard discards discarded put
    puts leave leaves left give gives gave given giving hand hands handed pass passes passed
    receive received carry carries carried carrying object objects back there is was either
    not longer north south east west yes no maybe none one two three nothing where what who
    how many before
    """.split())

_ENTITY_RE = re.compile(r"\b(?:" + "|".join(sorted(babi.ENTITY_WORDS)) + r")\b", re.IGNORECASE)


def mentions_task_entity(sentence: str) -> bool:
  """Whether ``sentence`` names a bAbI actor, room or object (whole word, any case)."""
  return _ENTITY_RE.search(sentence) is not None


class Haystack(abc.ABC):
  """A source of background sentences."""

  name: str = "haystack"

  @abc.abstractmethod
  def sentences(self, rng: random.Random) -> Iterator[str]:
    """An endless stream of sentences starting at a position drawn from ``rng``."""


# --- the built-in generator ---------------------------------------------------------------------
_PEOPLE = """sailor merchant captain blacksmith shepherd widow innkeeper lieutenant vicar duchess
clerk ferryman stranger cook physician poet weaver fisherman abbess watchman painter herald
coachman governess miller baker mason carpenter tailor potter cobbler jeweller banker lawyer
surgeon sergeant scholar astronomer botanist magistrate chaplain organist midwife housekeeper
steward huntsman falconer fiddler minstrel peddler smuggler pilot navigator cartographer
glassblower bookseller printer apprentice nephew niece uncle aunt grandmother grandfather
cousin widower squire countess bishop deacon knight archer drummer piper""".split()
_ADJECTIVES = """old young weary quiet cheerful stern anxious patient restless humble proud
gentle elderly tall stout thin clever foolish honest curious silent nervous kindly grim
solemn bold timid careful reckless wealthy poor lonely famous forgotten sleepy busy""".split()
_THINGS = """lantern ledger kettle portrait clock cloak saddle fiddle compass anchor bell
letter parcel basket bucket hammer chisel candle mirror quilt blanket barrel ladder rope net
telescope violin drum flute harp spoon ladle bowl jug pitcher teapot lamp inkwell quill
scroll map chart banner flag shield helmet sword dagger spear bow arrow trumpet brooch ring
necklace bracelet comb brush hat bonnet glove boot scarf shawl apron wagon cart sled boat oar
sail kite wheel loom spindle bench stool table chair chest trunk cabinet shelf cradle""".split()
_MATERIALS = """brass silver copper iron wooden leather velvet woollen linen oak pine stone
glass painted rusty polished faded cracked heavy tiny ancient new borrowed heavy""".split()
_PLACES = """river harbor hill inn mill market chapel orchard well bridge forge lighthouse
meadow quay crossroads fountain village cliffs monastery moor vineyard barracks lake landing
harbour wharf abbey tavern square churchyard valley ridge pasture dock stable barn granary
bakery quarry ford marsh forest grove shore bay cove island tower gate wall castle manor
cottage parsonage lodge camp fair""".split()
_PREPOSITIONS = ("by the", "near the", "at the", "beside the", "behind the", "across the",
                 "on the road to the", "within sight of the", "a mile from the", "past the")
_TIMES = """at dawn|at dusk|that morning|late in the evening|during the storm|on a grey
afternoon|after the harvest|in the spring|every sunday|at midnight|long ago|that winter|on the
first day of the fair|while the bells rang|as the tide turned|under a pale moon|at first
light|in the autumn rain|after the long drought|on the eve of the wedding|during the feast|
as the snow fell|in the heat of noon|through the night|at the turn of the year"""
_TIMES = [" ".join(t.split()) for t in _TIMES.split("|")]
_TRANSITIVE = """mended studied polished sketched counted examined repaired painted folded
sorted described admired wrapped carved copied sealed tuned cleaned inspected traded sold
bought borrowed measured weighed remembered praised questioned greeted welcomed thanked
followed guarded hid buried found lost stole returned opened locked unpacked packed weighed
loaded emptied filled decorated wrote signed burned washed dried stitched hammered""".split()
_INTRANSITIVE = """waited rested wept laughed prayed slept lingered sang whistled listened
worked hesitated sighed smiled paused shivered dozed argued danced hummed knelt stared
wondered dreamed complained shouted""".split()
_ADVERBS = """slowly quietly cheerfully patiently eagerly reluctantly carefully gravely
hastily gladly sadly proudly softly loudly briskly warily calmly idly""".split() + [
    "with great care", "in silence", "without a word", "for a long while", "at length",
    "as if in a dream", "with a heavy heart", "to everyone's surprise"]
_SPEECH = """said claimed feared hoped believed insisted whispered wrote swore recalled
explained complained suspected""".split()
_COMPANIONS = ("a friend", "the neighbours", "a band of pilgrims", "the children", "an old dog",
               "the whole household", "a pair of strangers", "the village elders")


def _person(rng: random.Random) -> str:
  det = rng.choice(("the", "the", "a", "his", "her", "their"))
  if rng.random() < 0.6:
    return f"{det} {rng.choice(_ADJECTIVES)} {rng.choice(_PEOPLE)}"
  return f"{det} {rng.choice(_PEOPLE)}"


def _thing(rng: random.Random) -> str:
  det = rng.choice(("the", "a", "his", "her", "their", "an old"))
  if det == "an old":
    return f"an old {rng.choice(_THINGS)}"
  if rng.random() < 0.5:
    return f"{det} {rng.choice(_MATERIALS)} {rng.choice(_THINGS)}"
  return f"{det} {rng.choice(_THINGS)}"


def _place(rng: random.Random) -> str:
  return f"{rng.choice(_PREPOSITIONS)} {rng.choice(_PLACES)}"


def _narrative_sentence(rng: random.Random) -> str:
  kind = rng.randrange(8)
  p, t = _person(rng), _thing(rng)
  if kind == 0:
    s = f"{p} {rng.choice(_TRANSITIVE)} {t} {_place(rng)} {rng.choice(_TIMES)}"
  elif kind == 1:
    s = f"{rng.choice(_TIMES)}, {p} {rng.choice(_INTRANSITIVE)} {_place(rng)}"
  elif kind == 2:
    s = (f"{p} {rng.choice(_TRANSITIVE)} {t} {rng.choice(_ADVERBS)}, and {_person(rng)} "
         f"{rng.choice(_INTRANSITIVE)}")
  elif kind == 3:
    s = (f"{p} {rng.choice(_SPEECH)} that {_person(rng)} had {rng.choice(_TRANSITIVE)} {t} "
         f"{_place(rng)}")
  elif kind == 4:
    s = f"{_place(rng)}, {p} {rng.choice(_TRANSITIVE)} {t} {rng.choice(_ADVERBS)}"
  elif kind == 5:
    s = f"{p} {rng.choice(_INTRANSITIVE)} with {rng.choice(_COMPANIONS)} {rng.choice(_TIMES)}"
  elif kind == 6:
    s = (f"{rng.choice(_TIMES)}, {p} and {_person(rng)} {rng.choice(_TRANSITIVE)} {t} "
         f"{_place(rng)}")
  else:
    s = f"{p} {rng.choice(_INTRANSITIVE)} {rng.choice(_ADVERBS)} while {_person(rng)} " \
        f"{rng.choice(_TRANSITIVE)} {t}"
  end = "!" if rng.random() < 0.03 else "."
  return s[0].upper() + s[1:] + end


class GeneratedHaystack(Haystack):
  """The zero-setup default: seeded narrative sentences free of every bAbI task word."""

  name = "default"

  def sentences(self, rng: random.Random) -> Iterator[str]:
    while True:
      yield _narrative_sentence(rng)


# --- real text ------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")
MIN_WORDS, MAX_WORDS = 3, 200


def split_sentences(text: str) -> list[str]:
  """Splits prose into sentences on ., ! or ? followed by a capital; joins hard line breaks."""
  text = " ".join(text.split())
  return [s for s in _SENTENCE_END.split(text) if s]


class TextHaystack(Haystack):
  """Sentences of the documents of a ``DocumentSource`` (.txt files, JSONL lines, parquet rows).

  Documents are read and split when first drawn (a few are cached), so a large corpus costs
  nothing until used. Sentences that name a task entity, or have fewer than ``MIN_WORDS`` or
  more than ``MAX_WORDS`` words, are dropped, counted and logged per document.
  """

  def __init__(self, documents: DocumentSource, name: str, cache_size: int = 16):
    self.documents = documents
    self.name = name
    self.cache_size = cache_size
    self._cache: OrderedDict[int, list[str]] = OrderedDict()
    self._lock = threading.Lock()
    self.dropped_entity = 0
    self.dropped_length = 0
    self.kept = 0

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_lock"]
    state["_cache"] = OrderedDict()
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def document_sentences(self, i: int) -> list[str]:
    with self._lock:
      if i in self._cache:
        self._cache.move_to_end(i)
        return self._cache[i]
    kept, entity, length = [], 0, 0
    for s in split_sentences(self.documents[i]):
      n = s.count(" ") + 1
      if n < MIN_WORDS or n > MAX_WORDS:
        length += 1
      elif mentions_task_entity(s):
        entity += 1
      else:
        kept.append(s)
    log.info("haystack %s: kept %d sentences, dropped %d that name a task entity and %d "
             "shorter than %d or longer than %d words", self.documents.describe(i), len(kept),
             entity, length, MIN_WORDS, MAX_WORDS)
    with self._lock:
      self.kept += len(kept)
      self.dropped_entity += entity
      self.dropped_length += length
      self._cache[i] = kept
      if len(self._cache) > self.cache_size:
        self._cache.popitem(last=False)
    return kept

  def sentences(self, rng: random.Random) -> Iterator[str]:
    empty_in_a_row = 0
    first = True
    while True:
      sents = self.document_sentences(rng.randrange(len(self.documents)))
      if not sents:
        empty_in_a_row += 1
        if empty_in_a_row > 2 * len(self.documents) + 10:
          raise DataError(f"{self.name}: no usable background sentence (every sentence was "
                          "too short, too long or named a task entity)")
        continue
      empty_in_a_row = 0
      start = rng.randrange(len(sents)) if first else 0
      first = False
      yield from sents[start:]


def load_text_folder(folder: str | os.PathLike) -> TextHaystack:
  """Every .txt file under ``folder`` (recursively), one document per file."""
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise DataError(f"{folder}: background text folder not found")
  files = sorted(glob.glob(os.path.join(folder, "**", "*.txt"), recursive=True))
  if not files:
    raise DataError(f"{folder}: no .txt files found (expected a folder of plain-text files)")
  return TextHaystack(DocumentSource(files), name=folder)


def load_pg19(folder: str | os.PathLike, split: str = "test", text_key: str = "text"
              ) -> TextHaystack:
  """PG19 as its users keep it: DeepMind's ``<split>/<id>.txt``, or parquet/JSONL files.

  For parquet/JSONL, files whose name starts with the split (``test-00000-of-00001.parquet``)
  or that sit in a ``<split>`` folder are used; a folder with no split-named files is read
  whole. BABILong's published data draws its background from the PG19 test split.
  """
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise DataError(f"{folder}: PG19 folder not found")
  split_dir = os.path.join(folder, split)
  txt = sorted(glob.glob(os.path.join(split_dir, "*.txt")))
  if txt:
    return TextHaystack(DocumentSource(txt), name=f"pg19:{split_dir}")
  tables = sorted(p for ext in ("parquet", "jsonl", "json")
                  for p in glob.glob(os.path.join(folder, "**", f"*.{ext}"), recursive=True))
  chosen = [p for p in tables if os.path.basename(p).startswith(split)
            or f"{os.sep}{split}{os.sep}" in p]
  if not chosen and tables and not any(
      os.path.basename(p).startswith(s) for p in tables for s in ("train", "validation", "test")):
    chosen = tables
  if not chosen:
    raise DataError(f"{folder}: no PG19 {split!r} data found (expected {split}/<id>.txt files, "
                    f"or {split}-*.parquet / *.jsonl with a {text_key!r} field)")
  return TextHaystack(DocumentSource(chosen, text_key), name=f"pg19:{folder}")


def load_haystack(spec: str | Haystack | None) -> Haystack:
  """``"default"`` (or None), a folder of .txt files, or ``"pg19:DIR"`` (``"pg19:DIR:split"``)."""
  if isinstance(spec, Haystack):
    return spec
  if spec is None or spec == "default":
    return GeneratedHaystack()
  spec = os.fspath(spec)
  if spec.startswith("pg19:"):
    rest = spec[len("pg19:"):]
    folder, _, split = rest.partition(":") if not os.path.isdir(rest) else (rest, "", "")
    return load_pg19(folder, split or "test")
  return load_text_folder(spec)
