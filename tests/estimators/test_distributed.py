"""Scale-out through existing engines: GridSearchCV on Dask and Ray, Incremental on Dask.

Each test starts its own cluster on the loopback interface and shuts it down. A search on
a cluster must give exactly what the same search gives in this process: every fit is
seeded, and the workers run the same code on the same folds.
"""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_moons
from sklearn.model_selection import GridSearchCV

from skebflow import EBFlowDensity
from tests.helpers import fit_quietly

GRID = {"objective": ["ml", "dsm"]}


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return make_moons(600, noise=0.1, random_state=0)[0]


def _small() -> EBFlowDensity:
    return EBFlowDensity(
        architecture="coupling", n_blocks=2, hidden_features=16, max_iter=3, random_state=0
    )


def _search(X: np.ndarray) -> GridSearchCV:
    return fit_quietly(GridSearchCV(_small(), GRID, cv=2), X)  # three epochs, on purpose


@pytest.fixture(scope="module")
def local_search(data: np.ndarray) -> GridSearchCV:
    return _search(data)


def _same_search(found: GridSearchCV, expected: GridSearchCV, X: np.ndarray) -> None:
    np.testing.assert_array_equal(
        found.cv_results_["mean_test_score"], expected.cv_results_["mean_test_score"]
    )
    assert found.best_params_ == expected.best_params_
    np.testing.assert_array_equal(found.score_samples(X), expected.score_samples(X))


def test_grid_search_on_a_dask_local_cluster_matches_the_local_search(data, local_search):
    pytest.importorskip(
        "distributed", reason="the [dask] extra is not installed; the test runs where it is"
    )
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
        joblib.parallel_backend("dask"),
    ):
        search = _search(data)
        workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
    assert client.status == "closed"
    _same_search(search, local_search, data)


def test_incremental_trains_over_the_blocks_of_a_dask_array(data):
    pytest.importorskip(
        "dask_ml", reason="the [dask] extra is not installed; the test runs where it is"
    )
    import dask.array as da
    from dask_ml.wrappers import Incremental
    from distributed import Client, LocalCluster

    blocks = da.from_array(data, chunks=(150, 2))
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster),
    ):
        wrapper = Incremental(_small(), shuffle_blocks=False).fit(blocks)
        score = wrapper.score(blocks, None)  # dask-ml's score needs an explicit y
    local = _small()
    for chunk in np.array_split(data, 4):
        local.partial_fit(chunk)
    assert wrapper.estimator_.n_iter_ == 4
    np.testing.assert_array_equal(wrapper.estimator_.score_samples(data), local.score_samples(data))
    assert score == pytest.approx(local.score(data))


def test_grid_search_on_ray_matches_the_local_search(data, local_search, monkeypatch):
    # Ray's own switch for a single-machine instance on the loopback interface (its
    # default on macOS and Windows); ray.init(_node_ip_address="127.0.0.1") is
    # re-resolved to the machine's address. Set before ray starts its processes.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = pytest.importorskip(
        "ray", reason="the [ray] extra is not installed; the test runs where it is"
    )
    from ray._private import ray_constants
    from ray.util.joblib import register_ray

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        register_ray()
        with joblib.parallel_backend("ray"):
            search = _search(data)
        assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    finally:
        ray.shutdown()
    assert not ray.is_initialized()
    _same_search(search, local_search, data)
