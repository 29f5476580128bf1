"""Entry point of ``python -m skebflow``: the command line is :mod:`skebflow.cli`."""

from skebflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
