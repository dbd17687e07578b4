"""What the command lines share: one-line usage errors and readable large numbers."""

import pytest

from lm2_jax.cli import OneLineParser, human


@pytest.mark.parametrize("x, kwargs, want", [
    (999, {}, "999"), (12_345, {}, "12.3K"), (1.234e9, {"digits": 3}, "1.234G"),
    (2e15, {}, "2000.0T"), (-4_500, {}, "-4.5K"),
    (100, {"binary": True}, "100 B"), (1536, {"binary": True}, "1.5 KiB"),
    (3 * 2**30, {"binary": True}, "3.0 GiB"),
])
def test_human_picks_the_largest_prefix_below_the_value(x, kwargs, want):
  assert human(x, **kwargs) == want


def test_a_usage_error_is_one_line_and_exit_code_2(capsys):
  parser = OneLineParser(prog="prog")
  parser.add_argument("--n", type=int, required=True)
  with pytest.raises(SystemExit) as e:
    parser.parse_args(["--n", "x"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "--n" in err and "prog --help" in err
