"""Tests of the optimization loop: learning, EMA, determinism, stopping, failures, RNG."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.optim.optimizer as torch_optimizer

from skebflow.nn._architectures import build_coupling, build_fc
from skebflow.objectives._registry import OBJECTIVES
from skebflow.training._ema import EMA
from skebflow.training._trainer import TrainConfig, Trainer, train

DTYPE = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: intra-op threads only add contention (much slower on a loaded machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ml_loss(flow, y, generator):
    return OBJECTIVES["ml"](flow, y, generator=generator)


def dsm_loss(flow, y, generator):
    return OBJECTIVES["dsm"](flow, y, generator=generator, noise_scale=0.3)


def gaussian_data(n, seed, mean=(1.0, -2.0), cov=((2.0, 1.2), (1.2, 1.0))):
    """Draw ``n`` rows of a correlated 2-D Gaussian; return (x, mean, cov)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.as_tensor(mean, dtype=DTYPE)
    cov = torch.as_tensor(cov, dtype=DTYPE)
    chol = torch.linalg.cholesky(cov)
    x = mean + torch.randn(n, 2, generator=g, dtype=DTYPE) @ chol.T
    return x, mean, cov


def tiny_coupling(seed=0):
    g = torch.Generator().manual_seed(seed)
    return build_coupling(2, n_blocks=1, hidden_features=8, generator=g).double()


def state_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- learning


def test_training_reduces_loss_and_improves_heldout_likelihood():
    x, _, _ = gaussian_data(256, seed=0)
    x_test, _, _ = gaussian_data(512, seed=1)
    flow = build_fc(2).double()
    with torch.no_grad():
        before = flow.log_prob(x_test).mean().item()
    config = TrainConfig(learning_rate=0.05, batch_size=64, max_iter=40, ema_decay=None)
    result = train(flow, ml_loss, x, config=config, generator=gen())
    with torch.no_grad():
        after = result.flow.log_prob(x_test).mean().item()
    assert result.n_iter == len(result.loss_curve) >= 10
    assert all(math.isfinite(v) for v in result.loss_curve)
    assert result.loss_curve[-1] < result.loss_curve[0] - 0.2
    assert after > before + 1.0
    assert result.n_steps == result.n_iter * 4
    assert result.n_skipped_steps == 0


def test_dense_flow_trained_by_ml_recovers_the_gaussian():
    # One Dense layer: p(y) = N(Wy + b; 0, I)|det W|, a full-covariance Gaussian whose ML
    # optimum is the sample mean and the (biased) sample covariance.
    mean, cov = (1.0, -1.0), ((1.5, 0.7), (0.7, 1.0))
    x, mean, cov = gaussian_data(1000, seed=2, mean=mean, cov=cov)
    x_test, _, _ = gaussian_data(1000, seed=3, mean=mean, cov=cov)
    flow = build_fc(2, n_blocks=1).double()
    assert all(type(layer).__name__ == "Dense" for layer in flow.layers)
    config = TrainConfig(
        learning_rate=0.1, batch_size=1000, max_iter=100, n_iter_no_change=1000, ema_decay=0.95
    )
    result = train(flow, ml_loss, x, config=config, generator=gen())
    normal = torch.distributions.MultivariateNormal
    with torch.no_grad():
        learned = result.flow.log_prob(x_test)
        untrained = build_fc(2, n_blocks=1).double().log_prob(x_test)
    mle = normal(x.mean(0), torch.cov(x.T, correction=0)).log_prob(x_test)
    truth = normal(mean, cov).log_prob(x_test)
    assert (learned - mle).abs().mean() < 0.01
    assert (learned - truth).abs().mean() < 0.1
    assert (untrained - truth).abs().mean() > 1.0  # the checks above are not vacuous


# ---------------------------------------------------------------------------- EMA


class _WithBuffer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2).double()
        self.register_buffer("count", torch.zeros(2, dtype=DTYPE))


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_ema_update_formula_with_warmup_and_buffers():
    net = _WithBuffer()
    ema = EMA(net, decay=0.9)
    assert ema.module is not net
    assert not any(p.requires_grad for p in ema.module.parameters())
    g = gen(3)

    def perturb():
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=DTYPE))
            net.count.add_(1.0)

    # First update copies the weights and buffers.
    perturb()
    ema.update()
    for own, theirs in zip(ema.module.parameters(), net.parameters(), strict=True):
        assert torch.equal(own, theirs)
    assert torch.equal(ema.module.count, net.count)
    assert ema.n_updates == 1

    # Following updates: decay = min(0.9, (1 + n) / (10 + n)), n = updates so far.
    for n in (1, 2, 3):
        old = _params(ema.module)
        perturb()
        ema.update()
        decay = min(0.9, (1 + n) / (10 + n))
        for o, new, src in zip(old, ema.module.parameters(), net.parameters(), strict=True):
            torch.testing.assert_close(new, decay * o + (1 - decay) * src, rtol=0, atol=1e-14)
        assert torch.equal(ema.module.count, net.count)

    # Long after warm-up the target decay applies.
    ema.n_updates = 1000
    old = _params(ema.module)
    perturb()
    ema.update()
    for o, new, src in zip(old, ema.module.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * o + 0.1 * src, rtol=0, atol=1e-14)
        assert not torch.equal(new, src)


def test_without_ema_result_flow_is_a_copy_of_the_trained_flow():
    x, _, _ = gaussian_data(64, seed=4)
    flow = build_fc(2).double()
    config = TrainConfig(learning_rate=0.01, batch_size=16, max_iter=3, ema_decay=None)
    result = train(flow, ml_loss, x, config=config, generator=gen())
    # A copy of the trained weights: the trainer's own model stays where training stopped.
    assert result.flow is not flow
    for kept, trained in zip(result.flow.parameters(), flow.parameters(), strict=True):
        assert torch.equal(kept, trained)
    assert not result.flow.training


def test_with_ema_result_flow_is_a_different_module_with_averaged_weights():
    x, _, _ = gaussian_data(64, seed=4)
    flow = build_fc(2).double()
    initial = _params(flow)
    config = TrainConfig(learning_rate=0.01, batch_size=16, max_iter=3, ema_decay=0.9)
    result = train(flow, ml_loss, x, config=config, generator=gen())
    assert result.flow is not flow
    assert not result.flow.training
    raw, averaged = _params(flow), _params(result.flow)
    assert any(not torch.equal(r, i) for r, i in zip(raw, initial, strict=True))
    assert any(not torch.equal(r, a) for r, a in zip(raw, averaged, strict=True))
    assert all(torch.isfinite(a).all() for a in averaged)


# ---------------------------------------------------------------------------- determinism


def _run_dsm(seed):
    x, _, _ = gaussian_data(48, seed=5)
    flow = tiny_coupling(seed=0)  # same initialization for every run
    config = TrainConfig(learning_rate=0.01, batch_size=16, max_iter=3, ema_decay=0.9)
    result = train(flow, dsm_loss, x, config=config, generator=gen(seed))
    return result, flow


def test_same_seed_same_training_and_different_seed_differs():
    a, flow_a = _run_dsm(7)
    b, flow_b = _run_dsm(7)
    c, flow_c = _run_dsm(8)
    assert a.loss_curve == b.loss_curve
    assert state_equal(flow_a.state_dict(), flow_b.state_dict())
    assert state_equal(a.flow.state_dict(), b.flow.state_dict())
    assert a.loss_curve != c.loss_curve
    assert not state_equal(flow_a.state_dict(), flow_c.state_dict())


# ---------------------------------------------------------------------------- stopping


def _scripted_score(values, snapshots, modes):
    calls = iter(values)

    def score_fn(model):
        snapshots.append(copy.deepcopy(model.state_dict()))
        modes.append(model.training)
        return next(calls)

    return score_fn


def test_early_stopping_keeps_the_best_epoch_weights():
    x, _, _ = gaussian_data(64, seed=6)
    flow = build_fc(2).double()
    snapshots, modes = [], []
    score_fn = _scripted_score([1.0, 3.0, 2.0, 2.5, 2.9, 5.0, 5.0], snapshots, modes)
    config = TrainConfig(
        learning_rate=0.01, batch_size=16, max_iter=20, n_iter_no_change=3, tol=0.0,
        ema_decay=0.9,
    )  # fmt: skip
    result = train(flow, ml_loss, x, config=config, generator=gen(), score_fn=score_fn)
    assert result.n_iter == 5
    assert result.converged
    assert result.validation_scores == [1.0, 3.0, 2.0, 2.5, 2.9]
    assert result.best_epoch == 2
    assert modes == [False] * 5  # the score is taken in eval mode
    assert state_equal(result.flow.state_dict(), snapshots[1])
    assert not state_equal(snapshots[1], snapshots[-1])  # the restore is not a no-op


@pytest.mark.parametrize(("initial", "best_epoch"), [(4.0, 0), (2.0, 2)])
def test_the_untrained_model_is_a_candidate_when_its_score_is_given(initial, best_epoch):
    x, _, _ = gaussian_data(64, seed=6)
    flow = build_fc(2).double()
    start = copy.deepcopy(flow.state_dict())
    snapshots, modes = [], []
    score_fn = _scripted_score([1.0, 3.0, 2.0, 2.5, 2.9, 3.5], snapshots, modes)
    config = TrainConfig(
        learning_rate=0.01, batch_size=16, max_iter=20, n_iter_no_change=3, tol=0.0,
        ema_decay=None,
    )  # fmt: skip
    trainer = Trainer(flow, ml_loss, config, generator=gen())
    result = trainer.fit(x, score_fn=score_fn, initial_score=initial)
    assert result.best_epoch == best_epoch
    if best_epoch == 0:  # no epoch beat the start: the start is what is kept
        assert result.n_iter == 3 and result.converged
        assert state_equal(result.flow.state_dict(), start)
        assert not state_equal(trainer.model.state_dict(), start)  # training did move
    else:
        assert result.n_iter == 5
        assert state_equal(result.flow.state_dict(), snapshots[1])


def test_best_epoch_is_the_best_score_even_below_tol():
    # Improvements smaller than tol count as stalls, yet the kept weights are the best ones.
    x, _, _ = gaussian_data(32, seed=6)
    flow = build_fc(2).double()
    snapshots, modes = [], []
    score_fn = _scripted_score([1.0, 1.00005, 1.00009, 0.5, 0.5], snapshots, modes)
    config = TrainConfig(
        learning_rate=0.01, batch_size=16, max_iter=20, n_iter_no_change=3, tol=1e-4,
        ema_decay=None,
    )  # fmt: skip
    result = train(flow, ml_loss, x, config=config, generator=gen(), score_fn=score_fn)
    assert result.n_iter == 4
    assert result.converged
    assert result.best_epoch == 3
    assert state_equal(result.flow.state_dict(), snapshots[2])


def test_score_fn_improving_runs_to_max_iter_without_converging():
    x, _, _ = gaussian_data(32, seed=6)
    flow = build_fc(2).double()
    config = TrainConfig(learning_rate=0.01, batch_size=16, max_iter=4, n_iter_no_change=2)
    scores = iter([1.0, 2.0, 3.0, 4.0])
    result = train(
        flow, ml_loss, x, config=config, generator=gen(), score_fn=lambda m: next(scores)
    )
    assert result.n_iter == 4
    assert not result.converged
    assert result.best_epoch == 4


def test_constant_loss_stops_after_n_iter_no_change():
    x, _, _ = gaussian_data(32, seed=7)
    flow = build_fc(2).double()

    def constant(f, y, g):
        return 0 * f.energy(y).mean() + 1.5

    config = TrainConfig(batch_size=16, max_iter=50, n_iter_no_change=4, tol=1e-4)
    result = train(flow, constant, x, config=config, generator=gen())
    assert result.n_iter == 5  # one improvement over -inf, then 4 stalls
    assert result.converged
    assert result.loss_curve == [1.5] * 5
    assert result.validation_scores == []
    assert result.best_epoch is None


def test_decreasing_loss_below_tol_counts_as_no_improvement():
    x, _, _ = gaussian_data(32, seed=7)
    flow = build_fc(2).double()
    step = {"n": 0}

    def slowly_decreasing(f, y, g):
        step["n"] += 1
        return 0 * f.energy(y).mean() + 1.0 - 1e-6 * step["n"]

    config = TrainConfig(batch_size=32, max_iter=50, n_iter_no_change=3, tol=1e-4)
    result = train(flow, slowly_decreasing, x, config=config, generator=gen())
    assert result.n_iter == 4
    assert result.converged
    # With tol=0 every (tiny) improvement resets the counter: runs to max_iter.
    step["n"] = 0
    config = TrainConfig(batch_size=32, max_iter=8, n_iter_no_change=3, tol=0.0)
    result = train(build_fc(2).double(), slowly_decreasing, x, config=config, generator=gen())
    assert result.n_iter == 8
    assert not result.converged


# ---------------------------------------------------------------------------- non-finite


def test_nan_steps_are_skipped_and_counted():
    x, _, _ = gaussian_data(64, seed=8)
    flow = build_fc(2).double()
    calls = {"n": 0}

    def sometimes_nan(f, y, g):
        calls["n"] += 1
        loss = ml_loss(f, y, g)
        return loss * math.nan if calls["n"] % 3 == 0 else loss

    config = TrainConfig(learning_rate=0.01, batch_size=16, max_iter=3, ema_decay=0.9)
    result = train(flow, sometimes_nan, x, config=config, generator=gen())
    total = 3 * 4
    assert calls["n"] == total
    assert result.n_skipped_steps == total // 3
    assert result.n_steps == total - total // 3
    assert all(math.isfinite(v) for v in result.loss_curve)
    assert all(torch.isfinite(p).all() for p in flow.parameters())
    assert all(torch.isfinite(p).all() for p in result.flow.parameters())
    assert torch.isfinite(result.flow.log_prob(x)).all()


def test_always_nan_loss_raises_with_remedies():
    x, _, _ = gaussian_data(32, seed=8)
    flow = build_fc(2).double()

    def nan_loss(f, y, g):
        return f.energy(y).mean() * math.nan

    config = TrainConfig(batch_size=4, max_iter=10, max_consecutive_skips=5)
    with pytest.raises(FloatingPointError, match="learning_rate") as info:
        train(flow, nan_loss, x, config=config, generator=gen())
    assert "5 consecutive" in str(info.value)


def test_infinite_gradient_raises_and_no_step_is_taken():
    x, _, _ = gaussian_data(32, seed=8)
    flow = build_fc(2).double()
    initial = _params(flow)

    def inf_gradient(f, y, g):
        w = f.layers[0].weight
        # sqrt(0) is finite, its derivative is not.
        return ml_loss(f, y, g) + torch.sqrt((w - w.detach()).sum())

    config = TrainConfig(batch_size=4, max_iter=10, max_consecutive_skips=3)
    with pytest.raises(FloatingPointError, match="learning_rate"):
        train(flow, inf_gradient, x, config=config, generator=gen())
    for p, p0 in zip(flow.parameters(), initial, strict=True):
        assert torch.equal(p.detach(), p0)


def test_nan_score_raises():
    x, _, _ = gaussian_data(32, seed=8)
    flow = build_fc(2).double()
    config = TrainConfig(batch_size=16, max_iter=5)
    with pytest.raises(FloatingPointError, match="validation"):
        train(flow, ml_loss, x, config=config, generator=gen(), score_fn=lambda m: math.nan)


# ---------------------------------------------------------------------------- clipping


def _train_recording_grads(max_grad_norm, loss_fn=ml_loss, flow=None):
    """Train briefly; return (raw gradients, gradients seen by the optimizer) per step."""
    x, _, _ = gaussian_data(32, seed=9)
    flow = tiny_coupling() if flow is None else flow
    raw, seen = [], []

    def recording_loss(f, y, g):
        loss = loss_fn(f, y, g)
        params = [p for p in f.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        raw.append([None if gr is None else gr.detach().clone() for gr in grads])
        return loss

    def hook(optimizer, args, kwargs):
        seen.append(
            [
                None if p.grad is None else p.grad.detach().clone()
                for group in optimizer.param_groups
                for p in group["params"]
            ]
        )

    handle = torch_optimizer.register_optimizer_step_pre_hook(hook)
    try:
        config = TrainConfig(
            learning_rate=0.01, batch_size=16, max_iter=2, max_grad_norm=max_grad_norm
        )
        train(flow, recording_loss, x, config=config, generator=gen())
    finally:
        handle.remove()
    return raw, seen


def _norm(grads):
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))


def test_gradient_clipping_bounds_the_norm_and_keeps_the_direction():
    bound = 1e-3
    raw, seen = _train_recording_grads(bound)
    assert len(raw) == len(seen) == 4
    for raw_step, seen_step in zip(raw, seen, strict=True):
        raw_norm = _norm(raw_step)
        assert raw_norm > bound  # clipping is active
        assert _norm(seen_step) <= bound * (1 + 1e-9)
        for r, s in zip(raw_step, seen_step, strict=True):
            torch.testing.assert_close(s, r * (bound / raw_norm), rtol=1e-9, atol=1e-15)


def test_no_clipping_without_max_grad_norm():
    raw, seen = _train_recording_grads(None)
    assert len(seen) == 4
    for raw_step, seen_step in zip(raw, seen, strict=True):
        for r, s in zip(raw_step, seen_step, strict=True):
            torch.testing.assert_close(s, r, rtol=1e-12, atol=0)


def test_clipping_tolerates_parameters_without_gradient():
    # log Z does not depend on the coupling's conditioner: those gradients stay None.
    def log_normalizer_only(f, y, g):
        return f.log_normalizer() + 0 * y.sum()

    bound = 1e-3
    raw, seen = _train_recording_grads(bound, loss_fn=log_normalizer_only)
    assert len(seen) == 4
    assert any(gr is None for gr in seen[0])
    for raw_step, seen_step in zip(raw, seen, strict=True):
        raw_norm = _norm(raw_step)
        assert raw_norm > bound
        for r, s in zip(raw_step, seen_step, strict=True):
            assert (r is None) == (s is None)
            if r is not None:
                torch.testing.assert_close(s, r * (bound / raw_norm), rtol=1e-9, atol=1e-15)


# ---------------------------------------------------------------------------- prepare, batches


def test_prepare_sees_every_batch_with_the_generator():
    x = torch.arange(20, dtype=DTYPE).reshape(10, 2)
    flow = build_fc(2).double()
    generator = gen()
    prepared, seen_by_loss = [], []

    def prepare(batch, g):
        assert g is generator
        prepared.append(batch.clone())
        return batch / 10.0

    def loss_fn(f, y, g):
        assert g is generator
        seen_by_loss.append(y.clone())
        return ml_loss(f, y, g)

    config = TrainConfig(learning_rate=0.01, batch_size=4, max_iter=2)
    train(flow, loss_fn, x, config=config, generator=generator, prepare=prepare)
    assert [b.shape[0] for b in prepared] == [4, 4, 2, 4, 4, 2]
    for b, y in zip(prepared, seen_by_loss, strict=True):
        torch.testing.assert_close(y, b / 10.0)
    for epoch in (prepared[:3], prepared[3:]):  # each sample once per epoch
        rows = torch.cat(epoch)
        assert torch.equal(rows[rows[:, 0].argsort()], x)
    assert not torch.equal(torch.cat(prepared[:3]), torch.cat(prepared[3:]))  # reshuffled


def test_batch_size_larger_than_n_is_clipped():
    x, _, _ = gaussian_data(10, seed=10)
    flow = build_fc(2).double()
    sizes = []

    def prepare(batch, g):
        sizes.append(batch.shape[0])
        return batch

    config = TrainConfig(learning_rate=0.01, batch_size=1000, max_iter=3)
    result = train(flow, ml_loss, x, config=config, generator=gen(), prepare=prepare)
    assert sizes == [10, 10, 10]
    assert result.n_steps == 3


# ---------------------------------------------------------------------------- interrupt, RNG


def test_keyboard_interrupt_returns_a_usable_model():
    x, _, _ = gaussian_data(32, seed=11)
    flow = tiny_coupling()
    calls = {"n": 0}

    def interrupting(f, y, g):
        calls["n"] += 1
        if calls["n"] == 6:  # second step of epoch 3
            raise KeyboardInterrupt
        return ml_loss(f, y, g)

    snapshots, modes = [], []
    score_fn = _scripted_score([2.0, 1.0, 0.0], snapshots, modes)
    config = TrainConfig(learning_rate=0.01, batch_size=16, max_iter=10, ema_decay=0.9)
    try:
        with pytest.warns(UserWarning, match="interrupted"):
            result = train(flow, interrupting, x, config=config, generator=gen(), score_fn=score_fn)
    except KeyboardInterrupt:  # would otherwise abort the whole pytest session
        pytest.fail("train let the KeyboardInterrupt escape")
    assert result.interrupted
    assert not result.converged
    assert result.n_iter == 2
    assert result.n_steps == 5
    assert result.best_epoch == 1
    assert state_equal(result.flow.state_dict(), snapshots[0])
    with torch.no_grad():
        assert torch.isfinite(result.flow.log_prob(x)).all()


def test_train_leaves_the_global_rng_untouched():
    x, _, _ = gaussian_data(32, seed=12)
    flow = tiny_coupling()

    def prepare(batch, g):
        return batch + 0.01 * torch.rand(batch.shape, generator=g, dtype=batch.dtype)

    state = torch.random.get_rng_state()
    config = TrainConfig(learning_rate=0.01, batch_size=16, max_iter=2, ema_decay=0.9)
    train(
        flow, dsm_loss, x, config=config, generator=gen(), prepare=prepare,
        score_fn=lambda m: float(m.log_prob(x).mean()),
    )  # fmt: skip
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize(("lr_patience", "expected"), [(None, 0.01), (2, 0.005), (1, 0.0025)])
def test_plateau_schedule_halves_the_learning_rate_when_the_score_stalls(lr_patience, expected):
    flow = build_fc(2).double()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    config = TrainConfig(
        learning_rate=0.01, batch_size=16, max_iter=6, n_iter_no_change=100, lr_patience=lr_patience
    )
    # A constant score never improves: one reduction after lr_patience + 1 stalled epochs.
    result = train(
        flow,
        ml_loss,
        x,
        config=config,
        generator=torch.Generator().manual_seed(1),
        score_fn=lambda model: 0.0,
    )
    assert result.final_learning_rate == pytest.approx(expected)
