"""Run gallery examples in quick mode in this process, one after the other.

``python runner.py RESULTS.json FIGDIR EXAMPLE.py ...`` runs each example with
:func:`runpy.run_path` as ``__main__`` (the imports of torch, skebflow and matplotlib are
paid once instead of once per example), each with ``SKEBFLOW_EXAMPLES_FIGDIR`` pointing
at its own folder under FIGDIR, and writes one record per example to RESULTS.json: its
status (``"ok"`` or the traceback), its wall time and its CPU time. The test in ``test_examples.py``
starts it in a subprocess.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path


def run(results: Path, figdir: Path, examples: list[Path]) -> None:
    """Run ``examples`` one by one and record how each went.

    Parameters
    ----------
    results : Path
        JSON file to write: ``{name: {"status": "ok" or a traceback, "seconds": wall
        time, "cpu_seconds": this process's CPU time}}``.
    figdir : Path
        Each example saves its figures into ``figdir / name``.
    examples : list of Path
        The example scripts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.environ["SKEBFLOW_EXAMPLES_QUICK"] = "1"
    records = {}
    for path in examples:
        folder = figdir / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["SKEBFLOW_EXAMPLES_FIGDIR"] = str(folder)
        sys.argv = [str(path)]
        start, cpu = time.perf_counter(), time.process_time()
        try:
            runpy.run_path(str(path), run_name="__main__")
            status = "ok"
        except BaseException:
            status = traceback.format_exc()
        records[path.stem] = {
            "status": status,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu,
        }
        plt.close("all")
        results.write_text(json.dumps(records, indent=1))
        record = records[path.stem]
        print(
            f"{path.stem}: {record['seconds']:.1f} s ({record['cpu_seconds']:.1f} s CPU), "
            f"{status[:200]}",
            flush=True,
        )


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]])
