"""The binding ablation of docs/results.md: what caps qa1 accuracy before distance does?

    python scripts/binding_ablation.py [--workdir runs/binding] [--num-samples 100]

At 0k the embedded default answers 60% and the full-attention vanilla model 46% (50 samples
each): the cap is there before any memory has to carry a fact far. Its errors are rooms of
the wrong actor, and it answers the room of the story's last fact 72% of the time
(`scripts/answer_analysis.py`): it learned recency, not who is where. Variants, all from
scratch on the default's stream (seed 0):
  base     the embedded default (600 steps)
  steps3x  the same model trained three times as long (1,800 steps, each curriculum stage
           three times as long)
  steps6x  3,600 steps (each curriculum stage six times as long)
  wide     width 128 (MLP 512) instead of 64, 600 steps
  bpe      600 steps reading a byte-level BPE of 512 tokens trained on the generated text
           (`python -m lm2_jax.data.tokenizer_training`): a fact is 6 tokens instead of
           about 27 bytes, names and rooms are single tokens. Lengths count tokens of each
           model's own tokenizer (as the paper's do), so 16k means the same number of
           32-token segments for both, with about three times the text for the BPE.
  hard     600 steps on a stream where half the samples are redrawn until the fact just
           before the question does not hold the answer (`data.hard_questions=0.5`): the
           "last room mentioned" is then right for about 30% of the training answers
           instead of 60%, so the loss rewards binding an actor to a room.
  interleave 600 steps where each sample keeps its story's earlier questions, answered and
           scored (`data.interleaved_questions=true`): 2.6 answers per 512-byte record
           instead of one, asked about every actor at every point of the story.
  interleave6x  the same for 3,600 steps (as steps6x)
  vanilla0k  does the backbone bind at all? Full causal attention, no memory, trained on
           the stories alone (0k) with interleaved questions, 1,800 steps; evaluate at 0k
           (`--lengths 0k`), where the whole story is in its attention.
  lm2_0k   the same stories and steps for the embedded default's LM2 (segment attention,
           the memory carries everything before the current 32 bytes)
  bpe0k    the binding probe at its cheapest: memory off, full causal attention, the 512-token
           BPE (names and rooms one token each), the stories alone in one 128-token segment
           with interleaved answers, batch 32, 3,000 steps (about 20 minutes alone); evaluate
           with `--lengths 0k`
  bpe0k_6k  the same for 6,000 steps (is it a plateau that more steps break?)
  bpe0k_hard  bpe0k with `data.hard_questions=0.5`
  bpe0k_wide  bpe0k at width 128 (MLP 512)
  bpe0k_wd0  bpe0k without weight decay (`train.weight_decay=0`): on qa1 stripped to single
           tokens (`scripts/binding_synthetic.py`) one run without it left the recency
           plateau (seed 0), one did not (seed 1)
  bpe0k_init  bpe0k initialised with standard deviation 1/sqrt(width) = 0.125 instead of 0.02:
           on the single-token task that ends the recency plateau (both seeds, by step 1,000)
  vanilla0k_init  vanilla0k initialised at 0.125: bytes instead of BPE tokens, otherwise
           the backbone that learned to read the question in bpe0k_init
  bpe0k_lm2  bpe0k_init's stories and tokens for LM2 trained from scratch: attention inside
           16-token segments (a story spans up to 8 of them, so earlier facts reach the
           question only through the memory), the memory's read starting at zero, 6,000
           steps, a checkpoint every 1,000 (on the single-token task LM2 from scratch left
           the recency plateau after 2,000-4,000 steps and bound fully by 5,000)
  bpe0k_rmt  bpe0k_lm2's stream, steps and segments for the RMT baseline (16 memory tokens
           read before and written after each 16-token segment), its MLP widened to 437 so
           that its parameters match LM2's (`lm2_jax.summary.matched_rmt`)
  bpe0k_lm2_seg128  stage 1 in two steps, first: bpe0k_lm2 with 128-token segments (the whole
           story in one segment's attention, the memory idle), 2,000 steps: the decoder learns
           to bind with attention, as bpe0k_init did
  bpe0k_lm2_shrink  then: from bpe0k_lm2_seg128's weights, segments cut to 16 tokens (earlier
           facts reach the question only through the memory), 3,000 steps at learning rate
           1e-3; does the memory take the binding over in every seed, where bpe0k_lm2 from
           scratch left the plateau in one run of four?
  bpe0k_lm2_seg64, bpe0k_lm2_seg32, bpe0k_lm2_seg16  the same cut in steps, each from the
           one before (seg64 from bpe0k_lm2_seg128): 64-, 32-, then 16-token segments, 1,000,
           1,000 and 2,000 steps at learning rate 1e-3. At each step only the facts farthest
           from the question leave its attention, so the decoder keeps reading the question
           while the memory learns to carry those
  bpe0k_lm2_mixed  bpe0k_lm2 (6,000 steps from scratch) with each batch cut into 16-, 32-, 64-
           or 128-token segments, drawn per step: the longer windows keep the decoder reading
           the question while the shorter ones make the memory carry the facts (they did
           not: docs/results.md, "Cutting each batch at a drawn length")
  bpe0k_lm2_shrink_hard  bpe0k_lm2_shrink for 2,000 steps with `data.hard_questions=0.5`: at
           the cut, "the last room mentioned" pays for about 30% of the answers instead of
           55%, so does the decoder keep reading the question while the memory learns? (No.)
  bpe0k_lm2_shrink_recall  bpe0k_lm2_shrink for 2,000 steps with `data.recall_questions=3`:
           after each story's answer every other actor is asked where they are at its end
           (qa1 has four), each answered and scored. "The last room mentioned" answers at
           most one of them, and with 16-token segments their facts reach them only through
           the memory: do the extra questions make the memory carry who is where at the cut?
           (In one seed of three.)
  bpe0k_lm2_shrink_recall_more  2,000 more steps of it, from its weights (a fresh schedule)
  bpe0k_lm2_recall  bpe0k_lm2 (6,000 steps from scratch) with `data.recall_questions=3`: the
           memory binds in 3 of 3 seeds (docs/results.md, "Asking every actor")
  bpe0k_lm2_seg128_mixed  from bpe0k_lm2_seg128's weights (a decoder that binds by attention),
           2,000 steps of bpe0k_lm2_mixed's cuts at learning rate 1e-3: the cut in steps
           without losing the full window (the memory still did not bind)
  bpe_lm2_haystack  the second stage: from bpe0k_lm2's weights (run it first, in the same
           --workdir), the BABILong stream in the same BPE: stories in background text, the
           question anywhere in a 16-token segment, up to 8 segments of background before
           it, 8 to 16 segments per batch, interleaved answers, 3,000 steps
  bpe_lm2_4k  the fourth stage, from bpe_lm2_long's weights: sequences of 128-256 segments
           (up to 4,096 tokens, batch 2), up to 12 stories each, a log-uniform 0-256
           segments of background before a question, learning rate 5e-4, 400 steps
  bpe_lm2_8k  beyond the issue's 4k-token training limit, to see whether the training
           length still moves the far end: from bpe_lm2_4k's weights, 256-512 segments (up to
           8,192 tokens, batch 1), up to 24 stories, a 0-512-segment gap, learning rate 3e-4,
           300 steps
  bpe_lm2_haystack_recall, bpe_lm2_long_recall, bpe_lm2_4k_recall  the same three stages
           from bpe0k_lm2_recall's weights, each from the one before, with
           `data.recall_questions=3` kept in their streams
  bpe_lm2_plain_recall  bpe_lm2_plain from bpe_lm2_4k_more_recall's weights, with the
           recall questions
  bpe_lm2_4k_more_recall  800 more steps of bpe_lm2_4k_recall (its weights, learning rate
           3e-4): does the far end move with steps at the same 4,096-token length?
  bpe_lm2_4k_more2_recall  800 more again, from bpe_lm2_4k_more_recall's weights
  bpe_lm2_4k_carry_recall  bpe_lm2_4k_more_recall with `train.memory_carry_steps=40`: each
           row's memory runs on from one sequence into the next for up to 40 sequences
           (about 7,600 segments, as many as a 128K sample has)
  bpe_lm2_4k_carry80_recall  the same with `train.memory_carry_steps=80` (about 15,000
           segments): a 128K sample's length then falls inside the trained range
  bpe_lm2_4k_carry20_recall  the same with `train.memory_carry_steps=20` (about 3,800
           segments): the other side of the 40-sequence carry
  bpe_lm2_4k_episodes_recall  bpe_lm2_4k_carry_recall with one row of two reading
           episodes (`data.episode_rows=1`, `data.episode_stories=4`): 1-4 stories spread
           over the row's 40 carried sequences, questions as far from their facts as at 64K-128K
  bpe_lm2_4k_episodes_qa1to5  bpe_lm2_4k_episodes_recall's weights trained 1,600 more steps
           the same way on qa1-qa5 (`data.tasks`), the tasks drawn per story; evaluate with
           `--tasks qa1,qa2,qa3,qa4,qa5`
  bpe0k_rmt_recall, bpe_rmt_haystack_recall, bpe_rmt_long_recall, bpe_rmt_4k_recall,
  bpe_rmt_4k_episodes_recall  the RMT baseline through LM2's staged lineage (`STAGED`),
           stage for stage: the same streams, steps and learning rates, each stage from
           the RMT's previous one, its MLP widened to 437 to match LM2's parameters
  bpe0k_vanilla_recall, ..., bpe_vanilla_4k_recall, bpe_vanilla_4k_more_recall  the same for
           the vanilla model (full causal attention, no memory); without a memory to carry,
           its last stage is the 800 steps at 4,096 tokens without the carry
  bpe0k_lm2_recall5, bpe_lm2_haystack_recall5, bpe_lm2_long_recall5, bpe_lm2_4k_recall5,
  bpe_lm2_4k_episodes_recall5  LM2's lineage on qa1-qa5: stories drawn from the five tasks,
           each followed by recall questions of its own kind (`data.recall_tasks`), a BPE
           trained on the five tasks (root/bpe512_qa1to5), stage 1 on 256-token sequences;
           evaluate with `--tasks qa1,qa2,qa3,qa4,qa5`
  bpe0k_lm2_recall5_qa1  bpe0k_lm2_recall5's weights, 1,500 more steps on qa1 stories alone
           (learning rate 1e-3): is qa1 in the mixture short of qa1 data?
  bpe0k_lm2_recall5_qa1only  bpe0k_lm2_recall5 from scratch on qa1 stories alone (the
           five-task tokenizer, 256-token sequences, batch 16): is it the setting or the mixture?
  bpe0k_lm2_recall_tok5, bpe0k_lm2_recall_rows256  bpe0k_lm2_recall (qa1, binds) with one
           part of that setting each: the five-task tokenizer; 256-token rows of batch 16
  bpe0k_lm2_recall5p, ..., bpe_lm2_4k_episodes_recall5p  the qa1-qa5 lineage with stage 1's
           0k records packed (`data.pack_stories`, about two stories per row), each later
           stage from the packed lineage's previous one
  bpe_lm2_4k_episodes_recall5p_more, ..._dense, ..._sparse  the packed lineage's stage 5
           trained 800 more steps the same way, or with up to 8 (or 2) stories per episode
           instead of 4
  bpe_lm2_4k_episodes_recall5p_centred  the `_more` arm with the read centred over the
           slots (`memory.read_centre`): does a read blind to the shared drift hold far facts?
  bpe_lm2_4k_episodes_recall5p_wcentred  the `_more` arm with each write's change centred
           over the slots (`memory.write_centre`): the shared offset cannot drift at all
  bpe0k_lm2_recall5p_longer  the packed stage 1's weights trained 3,000 more steps the
           same way (learning rate 1e-3): is the lineage capped by an unfinished stage 1?
  bpe0k_lm2_recall5p_short, bpe0k_lm2_recall5p_wide_short  the packed stage 1 from scratch
           in 1,000 steps, at width 64 and at width 128: a pilot of whether size lifts it
  bpe_lm2_4k_episodes_recall5p_qa1, ..._qa5  the same 800 steps on one task's stories and
           recall questions alone (fine-tuned per task, as BABILong's RMT baseline is);
           evaluate each with its own task (`--tasks qa3` for ..._qa3)
  bpe_lm2_mix  a fifth stage, from bpe_lm2_4k's weights: half the samples the stories
           alone (facts back to back, several in a segment, as at 0k), half in background
           with up to 6 stories and a 0-64-segment gap; 16-64 segments of batch 8, learning
           rate 3e-4, 300 steps
  bpe_lm2_plain  bpe_lm2_mix without the interleaved answers: each story asks only its
           last question, as evaluation does
  seg64, seg128  segments of 64 and 128 bytes instead of 32 (the same bytes per batch; the
           curriculum and gap ceilings scaled to the same byte counts): a fact and the
           whole question then mostly sit in one segment's attention.
Each is evaluated by `eval.py` (qa1 at 0k, 1k, 4k and 16k, free generation, 100 samples per
cell), then its answers are sorted by `scripts/answer_analysis.py` (correct, a stale room of
the same actor, another actor's room, ...; accuracy by the number of facts after the
supporting one). A rerun reuses finished trainings and evaluations.
"""

from __future__ import annotations

import os
import subprocess
import sys

from retention_ablation import MEASURED_INIT, ROOT, ablation_parser, pick_variants, steps_of  # scripts/ is on sys.path

CONFIG = "configs/babilong_tiny.yaml"
# Stories alone (no background), 512-token batches, every earlier question answered.
ZERO_K = ["train.curriculum.stage_steps=450", "data.lengths=[0]", "data.max_gap_segments=0",
          "data.interleaved_questions=true", "train.curriculum.max_segments=[16]",
          "train.curriculum.min_segments=16"]
# The same stories in the BPE, memory off, full attention, one 128-token segment.
BPE_ZERO_K = ["model.vocab_size=512", "data.tokenizer={bpe}", "data.lengths=[0]",
              "data.max_gap_segments=0", "data.interleaved_questions=true",
              "data.random_offset=false", "model.segment_len=128", "train.seq_len=128",
              "train.batch_size=32", "train.curriculum.max_segments=[1]",
              "train.curriculum.min_segments=1", "train.curriculum.stage_steps=100000",
              "train.eval_segments=[1]", "model.memory.kind=none", "model.attention_scope=full"]
# The stories for LM2: attention inside 16-token segments, the memory carries the rest.
SEGMENT_KEYS = ("model.segment_len", "train.curriculum.max_segments",
                "train.curriculum.min_segments", "train.eval_segments")
BPE_LM2_ZERO_K = [
    *(o for o in BPE_ZERO_K
      if not o.startswith(("model.memory.kind", "model.attention_scope", *SEGMENT_KEYS))),
    "model.memory.kind=lm2", "model.attention_scope=segment", "model.segment_len=16",
    "train.curriculum.max_segments=[8]", "train.curriculum.min_segments=8",
    "train.eval_segments=[8]", "model.memory.zero_init=true", "model.initializer_std=0.125",
    "train.checkpoint_every=1000", "train.keep=7"]


def _cut(overrides: list[str], segment_len: int) -> list[str]:
  """BPE_LM2_ZERO_K's 128-token sequences in segments of `segment_len` tokens."""
  n = 128 // segment_len
  keep = [o for o in overrides if not o.startswith(SEGMENT_KEYS)]
  return [*keep, f"model.segment_len={segment_len}", f"train.curriculum.max_segments=[{n}]",
          f"train.curriculum.min_segments={n}", f"train.eval_segments=[{n}]"]


# A stage from bpe_lm2_4k's weights: half the samples the stories alone, half in background.
MIX = ["train.steps=300", "train.init_from={workdir}/bpe_lm2_4k", "model.vocab_size=512",
       "data.tokenizer={bpe}", "data.interleaved_questions=true", "data.random_offset=true",
       "data.lengths=[0k,4k]", "data.max_gap_segments=64", "data.questions_per_sequence=6",
       "model.segment_len=16", "train.seq_len=1024", "train.batch_size=8",
       "train.learning_rate=3.0e-4", "train.warmup_steps=20",
       "train.curriculum.max_segments=[64]", "train.curriculum.min_segments=16",
       "train.curriculum.bucket=16", "train.eval_segments=[64]", "model.memory.zero_init=true",
       "model.initializer_std=0.125", "train.checkpoint_every=300", "train.keep=1"]
VARIANTS = {
    "base": ["train.steps=600"],
    "steps3x": ["train.steps=1800", "train.curriculum.stage_steps=450"],
    "steps6x": ["train.steps=3600", "train.curriculum.stage_steps=900"],
    "wide": ["train.steps=600", "model.width=128", "model.mlp_width=512"],
    "bpe": ["train.steps=600", "model.vocab_size=512", "data.tokenizer={bpe}"],
    "hard": ["train.steps=600", "data.hard_questions=0.5"],
    "interleave": ["train.steps=600", "data.interleaved_questions=true"],
    "interleave6x": ["train.steps=3600", "train.curriculum.stage_steps=900",
                     "data.interleaved_questions=true"],
    "vanilla0k": ["train.steps=1800", *ZERO_K, "model.memory.kind=none",
                  "model.attention_scope=full"],
    "lm2_0k": ["train.steps=1800", *ZERO_K],
    "bpe0k": ["train.steps=3000", *BPE_ZERO_K],
    "bpe0k_6k": ["train.steps=6000", *BPE_ZERO_K],
    "bpe0k_hard": ["train.steps=3000", *BPE_ZERO_K, "data.hard_questions=0.5"],
    "bpe0k_wd0": ["train.steps=3000", *BPE_ZERO_K, "train.weight_decay=0"],
    "bpe0k_wide": ["train.steps=3000", *BPE_ZERO_K, "model.width=128", "model.mlp_width=512"],
    "bpe0k_init": ["train.steps=3000", *BPE_ZERO_K, "model.initializer_std=0.125"],
    "vanilla0k_init": ["train.steps=1800", *ZERO_K, "model.memory.kind=none",
                       "model.attention_scope=full", "model.initializer_std=0.125"],
    "bpe0k_lm2": ["train.steps=6000", *BPE_LM2_ZERO_K],
    "bpe0k_rmt": ["train.steps=6000", "model.mlp_width=437",
                  *(o.replace("memory.kind=lm2", "memory.kind=rmt") for o in BPE_LM2_ZERO_K
                    if o != "model.memory.zero_init=true")],
    "bpe0k_lm2_seg128": ["train.steps=2000", *_cut(BPE_LM2_ZERO_K, 128)],
    "bpe0k_lm2_shrink": ["train.steps=3000", *BPE_LM2_ZERO_K,
                         "train.init_from={workdir}/bpe0k_lm2_seg128",
                         "train.learning_rate=1.0e-3"],
    **{f"bpe0k_lm2_seg{n}": [f"train.steps={steps}", *_cut(BPE_LM2_ZERO_K, n),
                             f"train.init_from={{workdir}}/bpe0k_lm2_seg{2 * n}",
                             "train.learning_rate=1.0e-3"]
       for n, steps in ((64, 1000), (32, 1000), (16, 2000))},
    "bpe0k_lm2_mixed": ["train.steps=6000", *BPE_LM2_ZERO_K,
                        "train.curriculum.segment_lens=[16,32,64,128]"],
    "bpe0k_lm2_shrink_hard": ["train.steps=2000", *BPE_LM2_ZERO_K,
                              "train.init_from={workdir}/bpe0k_lm2_seg128",
                              "train.learning_rate=1.0e-3", "data.hard_questions=0.5"],
    "bpe0k_lm2_shrink_recall": ["train.steps=2000", *BPE_LM2_ZERO_K,
                                "train.init_from={workdir}/bpe0k_lm2_seg128",
                                "train.learning_rate=1.0e-3", "data.recall_questions=3"],
    "bpe0k_lm2_shrink_recall_more": ["train.steps=2000", *BPE_LM2_ZERO_K,
                                     "train.init_from={workdir}/bpe0k_lm2_shrink_recall",
                                     "train.learning_rate=1.0e-3", "data.recall_questions=3"],
    "bpe0k_lm2_recall": ["train.steps=6000", *BPE_LM2_ZERO_K, "data.recall_questions=3"],
    "bpe0k_lm2_seg128_mixed": ["train.steps=2000", *BPE_LM2_ZERO_K,
                               "train.curriculum.segment_lens=[16,32,64,128]",
                               "train.init_from={workdir}/bpe0k_lm2_seg128",
                               "train.learning_rate=1.0e-3"],
    "bpe_lm2_haystack": [
        "train.steps=3000", "train.init_from={workdir}/bpe0k_lm2", "model.vocab_size=512",
        "data.tokenizer={bpe}", "data.interleaved_questions=true", "data.random_offset=true",
        "data.max_gap_segments=8", "model.segment_len=16", "train.seq_len=256",
        "train.batch_size=16", "train.curriculum.max_segments=[8,12,16]",
        "train.curriculum.min_segments=8", "train.curriculum.stage_steps=500",
        "train.eval_segments=[16]", "model.memory.zero_init=true",
        "model.initializer_std=0.125", "train.checkpoint_every=1000", "train.keep=3"],
    "bpe_lm2_long": [
        "train.steps=1200", "train.init_from={workdir}/bpe_lm2_haystack", "model.vocab_size=512",
        "data.tokenizer={bpe}", "data.interleaved_questions=true", "data.random_offset=true",
        "data.max_gap_segments=128", "data.questions_per_sequence=6", "model.segment_len=16",
        "train.seq_len=2048", "train.batch_size=2", "train.learning_rate=1.0e-3",
        "train.curriculum.max_segments=[32,64,128]", "train.curriculum.min_segments=16",
        "train.curriculum.stage_steps=400", "train.curriculum.bucket=16",
        "train.eval_segments=[128]",
        "model.memory.zero_init=true", "model.initializer_std=0.125",
        "train.checkpoint_every=400", "train.keep=3"],
    "bpe_lm2_4k": [
        "train.steps=400", "train.init_from={workdir}/bpe_lm2_long", "model.vocab_size=512",
        "data.tokenizer={bpe}", "data.interleaved_questions=true", "data.random_offset=true",
        "data.max_gap_segments=256", "data.questions_per_sequence=12", "model.segment_len=16",
        "train.seq_len=4096", "train.batch_size=2", "train.learning_rate=5.0e-4",
        "train.warmup_steps=20", "train.curriculum.max_segments=[256]",
        "train.curriculum.min_segments=128", "train.curriculum.bucket=64",
        "train.eval_segments=[256]", "model.memory.zero_init=true",
        "model.initializer_std=0.125", "train.checkpoint_every=200", "train.keep=2"],
    "bpe_lm2_8k": [
        "train.steps=300", "train.init_from={workdir}/bpe_lm2_4k", "model.vocab_size=512",
        "data.tokenizer={bpe}", "data.interleaved_questions=true", "data.random_offset=true",
        "data.max_gap_segments=512", "data.questions_per_sequence=24", "model.segment_len=16",
        "train.seq_len=8192", "train.batch_size=1", "train.learning_rate=3.0e-4",
        "train.warmup_steps=20", "train.curriculum.max_segments=[512]",
        "train.curriculum.min_segments=256", "train.curriculum.bucket=128",
        "train.eval_segments=[512]", "model.memory.zero_init=true",
        "model.initializer_std=0.125", "train.checkpoint_every=300", "train.keep=1"],
    "bpe_lm2_mix": MIX,
    "bpe_lm2_plain": [o.replace("data.interleaved_questions=true",
                                "data.interleaved_questions=false") for o in MIX],
    "seg64": ["train.steps=600", "model.segment_len=64", "train.curriculum.max_segments=[3,5,8]",
              "train.curriculum.min_segments=3", "data.max_gap_segments=4"],
    "seg128": ["train.steps=600", "model.segment_len=128",
               "train.curriculum.max_segments=[2,3,4]", "train.curriculum.min_segments=2",
               "data.max_gap_segments=2"],
}


# The later stages again, from the stage 1 that binds in every seed (bpe0k_lm2_recall), with
# the recall questions kept in their streams.
# Each stage: (the run its init_from names, the run it starts from instead).
_RECALL_PARENTS = {"bpe_lm2_haystack": ("bpe0k_lm2", "bpe0k_lm2_recall"),
                   "bpe_lm2_long": ("bpe_lm2_haystack", "bpe_lm2_haystack_recall"),
                   "bpe_lm2_4k": ("bpe_lm2_long", "bpe_lm2_long_recall"),
                   "bpe_lm2_plain": ("bpe_lm2_4k", "bpe_lm2_4k_more_recall")}
for _stage, (_old, _new) in _RECALL_PARENTS.items():
  VARIANTS[f"{_stage}_recall"] = [
      o.replace(f"{{workdir}}/{_old}", f"{{workdir}}/{_new}")
      for o in VARIANTS[_stage]] + ["data.recall_questions=3"]

# Stage 4 three times as long: does the far end (64k-128k) move with more steps at the same
# lengths, under the 4,096-token limit?
VARIANTS["bpe_lm2_4k_more_recall"] = [
    o for o in VARIANTS["bpe_lm2_4k_recall"]
    if not o.startswith(("train.steps", "train.init_from", "train.learning_rate",
                         "train.checkpoint_every"))] + [
    "train.steps=800", "train.init_from={workdir}/bpe_lm2_4k_recall",
    "train.learning_rate=3.0e-4", "train.checkpoint_every=400"]
# The same 800 steps with each row's memory carried from one sequence into the next, up to
# 40 sequences (about 7,600 segments, 128K tokens' worth) before it restarts: does training
# on a long-running memory move the far end?
VARIANTS["bpe_lm2_4k_carry_recall"] = [*VARIANTS["bpe_lm2_4k_more_recall"],
                                       "train.memory_carry_steps=40"]
VARIANTS["bpe_lm2_4k_carry80_recall"] = [*VARIANTS["bpe_lm2_4k_more_recall"],
                                         "train.memory_carry_steps=80"]
VARIANTS["bpe_lm2_4k_carry20_recall"] = [*VARIANTS["bpe_lm2_4k_more_recall"],
                                         "train.memory_carry_steps=20"]
# The 40-sequence carry with one of the two rows reading episodes instead of records: one
# to four stories spread over the row's 40 sequences (about 120K tokens), so its questions
# ask about facts as far back as evaluation's at 64K-128K.
VARIANTS["bpe_lm2_4k_episodes_recall"] = [*VARIANTS["bpe_lm2_4k_carry_recall"],
                                          "data.episode_rows=1", "data.episode_stories=4"]
# The five tasks from the qa1 model: does what its memory learned for qa1 carry to qa2-qa5
# (more supporting facts, objects, relations) in a second stage at the same lengths?
VARIANTS["bpe_lm2_4k_episodes_qa1to5"] = [
    o for o in VARIANTS["bpe_lm2_4k_episodes_recall"]
    if not o.startswith(("train.steps", "train.init_from"))] + [
    "train.steps=1600", "train.init_from={workdir}/bpe_lm2_4k_episodes_recall",
    "data.tasks=[qa1,qa2,qa3,qa4,qa5]"]
VARIANTS["bpe_lm2_4k_more2_recall"] = [
    o.replace("{workdir}/bpe_lm2_4k_recall", "{workdir}/bpe_lm2_4k_more_recall")
    for o in VARIANTS["bpe_lm2_4k_more_recall"]]

# The staged recipe of docs/results.md for each model, stage by stage (each from the one
# before; the last is the model to evaluate): LM2's best lineage, and the same streams,
# steps, segments, learning rates and seeds for the two baselines, each stage from its own
# model's previous stage. RMT reads 16 memory tokens before and writes 16 after each 16-token
# segment, its MLP 437 wide so that its parameters match LM2's; the vanilla model attends
# over the whole sequence and has no memory, so it cannot carry one across sequences: its
# last stage is the same 800 steps without the carry (the same token budget).
STAGED = {
    "lm2": ["bpe0k_lm2_recall", "bpe_lm2_haystack_recall", "bpe_lm2_long_recall",
            "bpe_lm2_4k_recall", "bpe_lm2_4k_episodes_recall"],
}
_BASELINES = {
    "rmt": (["model.memory.kind=rmt", "model.mlp_width=437"], STAGED["lm2"]),
    "vanilla": (["model.memory.kind=none", "model.attention_scope=full"],
                [*STAGED["lm2"][:4], "bpe_lm2_4k_more_recall"]),
}


def _baseline(overrides: list[str], kind: str) -> list[str]:
  """An LM2 stage's overrides for a baseline: its own parents, no LM2-only keys."""
  keep = [o.replace("_lm2_", f"_{kind}_") if o.startswith("train.init_from") else o
          for o in overrides
          if not o.startswith(("model.memory.kind", "model.attention_scope",
                               "model.memory.zero_init", "model.mlp_width"))]
  return [*keep, *_BASELINES[kind][0]]


for _kind, (_, _stages) in _BASELINES.items():
  STAGED[_kind] = [s.replace("_lm2_", f"_{_kind}_") for s in _stages]
  for _stage, _name in zip(_stages, STAGED[_kind]):
    VARIANTS[_name] = _baseline(VARIANTS[_stage], _kind)

# LM2's staged lineage on qa1-qa5 (names ending in 5): every stage's stories drawn from the
# five tasks, each followed by its own recall questions (`data.recall_tasks`: the other
# objects' places for qa2 and qa3, the other readings of qa4's two relations, who gave and
# who received each object for qa5), a BPE trained on all five tasks' text (qa5's names are
# not in qa1's), and stage 1 on 256-token sequences (16 segments, batch 16: the same tokens
# per step) so that most qa2, qa3 and qa5 stories fit it whole.
FIVE_TASKS = "[qa1,qa2,qa3,qa4,qa5]"
STAGED["lm2_qa1to5"] = [f"{s}5" for s in STAGED["lm2"]]
for _stage, _name in zip(STAGED["lm2"], STAGED["lm2_qa1to5"]):
  VARIANTS[_name] = [  # each stage's parent is the stage before it in STAGED["lm2"]
      o.replace("{bpe}", "{bpe5}") + ("5" if o.startswith("train.init_from") else "")
      for o in VARIANTS[_stage]] + [f"data.tasks={FIVE_TASKS}", f"data.recall_tasks={FIVE_TASKS}"]


def _rows256(overrides: list[str]) -> list[str]:
  """A 128-token stage 1 on 256-token rows in 16 segments, batch 16 (the same tokens)."""
  return [o for o in overrides
          if not o.startswith(("train.seq_len", "train.batch_size", *SEGMENT_KEYS[1:]))] + [
      "train.seq_len=256", "train.batch_size=16", "train.curriculum.max_segments=[16]",
      "train.curriculum.min_segments=16", "train.eval_segments=[16]"]


VARIANTS[STAGED["lm2_qa1to5"][0]] = _rows256(VARIANTS[STAGED["lm2_qa1to5"][0]])
# The same lineage with stage 1's 0k records packed (`data.pack_stories`): about two
# stories per 256-token row instead of one and padding, as many per step as the qa1
# recipe's 128-token rows of batch 32 see. Only stage 1 has 0k records to pack.
STAGED["lm2_qa1to5_packed"] = [f"{s}p" for s in STAGED["lm2_qa1to5"]]
for _stage, _name in zip(STAGED["lm2_qa1to5"], STAGED["lm2_qa1to5_packed"]):
  VARIANTS[_name] = [o + ("p" if o.startswith("train.init_from") else "")
                     for o in VARIANTS[_stage]]
VARIANTS[STAGED["lm2_qa1to5_packed"][0]].append("data.pack_stories=true")
# Does the far end of the packed five-task model (qa1-qa5 lose 14 points from 0k to 128k) lack
# episodes? Stage 5 gives each task about ten far-away stories (800 steps, one row of two,
# 1-4 stories per 40-sequence cycle). Its weights trained 800 more steps the same way, and
# the same 800 steps with up to 8 stories per episode (twice as many far questions per step).
_LAST_PACKED = STAGED["lm2_qa1to5_packed"][-1]
VARIANTS[f"{_LAST_PACKED}_more"] = [
    o for o in VARIANTS[_LAST_PACKED] if not o.startswith("train.init_from")] + [
    f"train.init_from={{workdir}}/{_LAST_PACKED}"]
VARIANTS[f"{_LAST_PACKED}_dense"] = [
    o for o in VARIANTS[f"{_LAST_PACKED}_more"] if not o.startswith("data.episode_stories")] + [
    "data.episode_stories=8"]
# The other side of the dense arm: 1-2 stories per episode, so fewer facts held at once and
# each question farther from its facts (the same two changes as 8 stories, reversed).
VARIANTS[f"{_LAST_PACKED}_sparse"] = [
    o for o in VARIANTS[f"{_LAST_PACKED}_more"] if not o.startswith("data.episode_stories")] + [
    "data.episode_stories=2"]
# Or does the read not follow the memory's drift? Under background every unit of a memory
# layer moves by about the same offset in all slots (88% of the move of the unit means from
# +16 to +1,024 inserted segments, qa5; scripts/memory_decode.py --recentre), and the
# trained read, which sees that offset, misses facts the memory still holds. The `_more`
# arm's 800 steps with the read seeing each unit centred over the slots (`memory.read_centre`).
VARIANTS[f"{_LAST_PACKED}_centred"] = [*VARIANTS[f"{_LAST_PACKED}_more"],
                                       "model.memory.read_centre=true"]
# The write-side counterpart: each write's change centred over the slots
# (`memory.write_centre`), so the offset all slots share cannot move at all and the read
# sees far memories where it saw near ones in that part.
VARIANTS[f"{_LAST_PACKED}_wcentred"] = [*VARIANTS[f"{_LAST_PACKED}_more"],
                                        "model.memory.write_centre=true"]
# Is the far end short of one task's practice? BABILong's RMT baseline is fine-tuned per task;
# here each task gets the `_more` arm's 800 steps on its own stories and recall questions
# alone (five times its far-away episodes), each model scored on its own task. `_more` is
# the control: the same steps on all five tasks.
for _task in ("qa1", "qa2", "qa3", "qa4", "qa5"):
  VARIANTS[f"{_LAST_PACKED}_{_task}"] = [
      o for o in VARIANTS[f"{_LAST_PACKED}_more"]
      if not o.startswith(("data.tasks", "data.recall_tasks"))] + [
      f"data.tasks=[{_task}]", f"data.recall_tasks=[{_task}]"]

# Or is the whole lineage capped by stage 1? Its training accuracy rises until stage 1's last
# steps and no later stage lifts it. Stage 1's weights trained 3,000 more steps the same way,
# with a fresh schedule at half stage 1's peak learning rate.
_FIRST_PACKED = STAGED["lm2_qa1to5_packed"][0]
VARIANTS[f"{_FIRST_PACKED}_longer"] = [
    o for o in VARIANTS[_FIRST_PACKED] if not o.startswith("train.steps")] + [
    "train.steps=3000", f"train.init_from={{workdir}}/{_FIRST_PACKED}",
    "train.learning_rate=1.0e-3", "train.warmup_steps=50"]

# Or by the model's size? A pilot at a sixth of stage 1's steps: the packed stage 1 from
# scratch for 1,000 steps (its schedule compressed), at width 64 and at width 128 (MLP 512,
# weights drawn at 1/sqrt(128)), the same stream and seed.
_SHORT = [o for o in VARIANTS[_FIRST_PACKED] if not o.startswith("train.steps")] + [
    "train.steps=1000"]
VARIANTS[f"{_FIRST_PACKED}_short"] = _SHORT
VARIANTS[f"{_FIRST_PACKED}_wide_short"] = [
    o for o in _SHORT if not o.startswith("model.initializer_std")] + [
    "model.width=128", "model.mlp_width=512", "model.initializer_std=0.0884"]


def _qa1_only(overrides: list[str], drop: tuple[str, ...] = ()) -> list[str]:
  """`overrides` on qa1 stories alone, without the keys that start with `drop`."""
  return [o for o in overrides if not o.startswith(("data.tasks", "data.recall_tasks", *drop))
          ] + ["data.tasks=[qa1]", "data.recall_tasks=[qa1]"]


# Is qa1 short of qa1 data in the five-task stage 1 (a fifth of the stories)? Its weights
# trained 1,500 more steps on qa1 stories alone, the same stream otherwise.
VARIANTS["bpe0k_lm2_recall5_qa1"] = _qa1_only(VARIANTS["bpe0k_lm2_recall5"], ("train.steps",)) + [
    "train.steps=1500", "train.init_from={workdir}/bpe0k_lm2_recall5",
    "train.learning_rate=1.0e-3", "train.warmup_steps=50"]
# Or is it the five-task setting itself? qa1 stories alone from scratch in the five-task
# stage 1's tokenizer, sequence length and batch (bpe0k_lm2_recall5 with qa1 only).
VARIANTS["bpe0k_lm2_recall5_qa1only"] = _qa1_only(VARIANTS["bpe0k_lm2_recall5"])
# Which part of the setting? The qa1 recipe that binds (bpe0k_lm2_recall) with one of the
# two differences at a time: the five-task tokenizer, or the five-task stage 1's rows (256
# tokens in 16 segments, batch 16: the same tokens per step, half the stories).
VARIANTS["bpe0k_lm2_recall_tok5"] = [o.replace("{bpe}", "{bpe5}")
                                     for o in VARIANTS["bpe0k_lm2_recall"]]
VARIANTS["bpe0k_lm2_recall_rows256"] = _rows256(VARIANTS["bpe0k_lm2_recall"])
# The tokenizers the variants read: {bpe} on qa1's text, {bpe5} on qa1-qa5's.
TOKENIZERS = {"bpe": ("bpe512", "qa1"), "bpe5": ("bpe512_qa1to5", "qa1,qa2,qa3,qa4,qa5")}


def _tokenizer_path(root: str, key: str) -> str:
  return os.path.join(root, TOKENIZERS[key][0], "tokenizer.json")


def overrides_of(name: str, root: str) -> list[str]:
  """A variant's config overrides, its tokenizer and parents placed under `root`."""
  paths = {key: _tokenizer_path(root, key) for key in TOKENIZERS}
  return [o.format(workdir=root, **paths) for o in VARIANTS[name]]


def train_variant(name: str, root: str, seed: int, run=subprocess.run) -> str:
  """Train `name` in root/name unless its last checkpoint is there; returns that directory.

  The BPE it reads (root/bpe512, on generated qa1 text, or root/bpe512_qa1to5, on qa1-qa5's)
  is trained first when missing; a stage's parent (`train.init_from`) must already be
  trained under the same root.
  """
  workdir = os.path.join(root, name)
  over = overrides_of(name, root)
  for key, (_, tasks) in TOKENIZERS.items():
    bpe = _tokenizer_path(root, key)
    if any(bpe in o for o in over) and not os.path.exists(bpe):
      cmd = [sys.executable, "-m", "lm2_jax.data.tokenizer_training", "--output", bpe,
             "--vocab-size", "512", "--tasks", tasks, "--num-samples", "2000"]
      print("$", " ".join(cmd[1:]), flush=True)
      run(cmd, cwd=ROOT, check=True)
  if not os.path.isdir(os.path.join(workdir, "checkpoints", str(steps_of(over)))):
    cmd = [sys.executable, "train.py", "--config", CONFIG, "--workdir", workdir,
           f"train.seed={seed}", "train.eval_samples=0", MEASURED_INIT, *over]
    print("$", " ".join(cmd[1:]), flush=True)
    run(cmd, cwd=ROOT, check=True)
  return workdir

def main(argv=None) -> int:
  p = ablation_parser(__doc__, "binding", VARIANTS)
  p.add_argument("--lengths", default="0k,1k,4k,16k")
  p.add_argument("--tasks", default="qa1", help="the tasks to evaluate, comma-separated")
  p.add_argument("--eval-seed", type=int, default=None,
                 help="the held-out samples' seed (default --seed): a second training seed "
                      "evaluated on the first one's samples compares with it pair by pair")
  args = p.parse_args(argv)
  eval_seed = args.seed if args.eval_seed is None else args.eval_seed
  names = pick_variants(args.variants, VARIANTS)
  if names is None:
    return 2
  prediction_dirs = []
  for name in names:
    workdir = train_variant(name, args.workdir, args.seed)
    steps = steps_of(VARIANTS[name])
    output = os.path.join(args.workdir, "eval", f"{name}.json")
    cmd = [sys.executable, "eval.py", "--checkpoint", workdir, "--name", name, "--task",
           "babilong", "--tasks", args.tasks, "--lengths", args.lengths, "--num-samples",
           str(args.num_samples), "--seed", str(eval_seed), "--output", output, "--no-progress"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    prediction_dirs.append(os.path.join(args.workdir, "eval", f"{name}_predictions",
                                        f"{name}_step{steps}"))
  cmd = [sys.executable, os.path.join("scripts", "answer_analysis.py"), *prediction_dirs,
         "--output", os.path.join(args.workdir, "answers.json")]
  print("$", " ".join(cmd[1:]), flush=True)
  return subprocess.run(cmd, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
  sys.exit(main())
