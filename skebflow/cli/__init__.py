"""The command line: ``python -m skebflow {demo,bench,fit,score,sample} ...``.

* ``demo``: fit the default :class:`~skebflow.EBFlowDensity` and a score-matching one
  (``--objectives``) on a built-in 2-D data set (checkerboard by default), print
  held-out log-likelihoods next to a cross-validated KernelDensity and a BIC-chosen
  GaussianMixture, and save a picture of every model's density and samples.
* ``bench``: the benchmarks (see ``python -m skebflow bench --help``).
* ``fit`` / ``score`` / ``sample``: train on a CSV or ``.npy`` file (every estimator
  parameter is an option), save the model in skebflow's model format (it loads without
  running code; see ``docs/persistence.md``), print the log-density of each row of
  another file, or draw samples into a file.

Mistakes end with one line ``error: ...`` on stderr: exit status 2 for the command line
itself (an unknown option, a bad parameter value, a missing file), 1 for files and data
(an unreadable file, NaN, the wrong number of columns). ``--debug`` adds the traceback.
See ``docs/cli.md``.

``python -m skebflow`` and the ``skebflow`` script both run :func:`main`. The modules:
``_main`` (the parser and the dispatch), ``_commands`` (``fit``, ``score``, ``sample``),
``_demo``, ``_io`` (data and model files), ``_options`` (one option per estimator
parameter) and ``_messages`` (one-line errors and their exit status, notes, warnings).
"""

from skebflow.cli._main import main

__all__ = ["main"]
