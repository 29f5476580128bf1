"""``python -m skebflow bench``: the subcommands (each benchmark is tested in its own file)."""

import pytest

from skebflow.bench._cli import main


def test_bench_rejects_unknown_subcommand():
    with pytest.raises(SystemExit):
        main(["nothing"])


def test_bench_help_is_plain_text(capsys):
    """``bench --help`` shows the module's overview without reStructuredText markup."""
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":mod:" not in out and ">>>" not in out
    assert "see skebflow.bench._scale" in out.replace("\n    ", " ")
