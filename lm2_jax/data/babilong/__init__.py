"""BABILong: bAbI facts hidden in long background text, its prompts, its scoring rule, its files.

One module per job: ``lengths`` (nominal lengths and the input budget), ``samples`` (assembling
a sample), ``scoring`` (the published rule), ``prompts`` (the templates), ``stream`` (Grain
sources and the training stream), ``files`` (reading the published layouts) and ``cli``
(``python -m lm2_jax.data.babilong``). The public names are re-exported here.
"""

from lm2_jax.data.babi import TASKS
from lm2_jax.data.babilong.cli import main
from lm2_jax.data.babilong.files import load_babilong_dir
from lm2_jax.data.babilong.lengths import (LENGTHS, PROMPT_RESERVE, input_budget, length_name,
                                           parse_length)
from lm2_jax.data.babilong.prompts import (COMPACT_TEMPLATE, PROMPTS, format_prompt,
                                           format_training_example)
from lm2_jax.data.babilong.samples import make_sample
from lm2_jax.data.babilong.scoring import TASK_LABELS, compare_answers
from lm2_jax.data.babilong.stream import BabilongSource, make_babilong_dataset, sample_to_arrays

__all__ = [
    "BabilongSource", "COMPACT_TEMPLATE", "LENGTHS", "PROMPTS", "PROMPT_RESERVE", "TASKS",
    "TASK_LABELS", "compare_answers", "format_prompt", "format_training_example",
    "input_budget", "length_name", "load_babilong_dir", "main", "make_babilong_dataset",
    "make_sample", "parse_length", "sample_to_arrays",
]
