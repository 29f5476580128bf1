"""``python -m skebflow bench``: the subcommands (each benchmark is tested in its own file)."""

import pytest

from skebflow.bench._cli import main


def test_bench_rejects_unknown_subcommand():
    with pytest.raises(SystemExit):
        main(["nothing"])
