"""The training loop and its callbacks, on a tiny quadratic model.

The model fits ``w`` to ``mean_i 0.5 * ||w - x_i||^2``; its optimum is the mean of the
samples, and the "codes" a step reports are the batch itself.
"""

import pytest
import torch

from sklearn_sparsegap._training import (
    Callback,
    Checkpoint,
    CountFlops,
    DeadLatents,
    LogHistory,
    ProgressBar,
    ResampleDeadLatents,
    batch_statistics,
    train,
)


class Quadratic(torch.nn.Module):
    def __init__(self, n_features=3):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n_features, dtype=torch.float64))


def _problem(n_samples=10, seed=0):
    X = torch.randn(n_samples, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    model = Quadratic()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)

    def compute_gradients(indices, with_stats):
        batch = X if indices is None else X[indices]
        model.w.grad = None
        residual = model.w - batch
        loss = 0.5 * residual.square().sum(dim=1).mean()
        loss.backward()
        return batch, batch_statistics(loss, residual, batch) if with_stats else None

    return X, model, optimizer, compute_gradients


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, state):
        self.events.append(("train_begin", state.step, state.epoch))

    def on_epoch_begin(self, state):
        self.events.append(("epoch_begin", state.step, state.epoch))

    def on_step_end(self, state):
        self.events.append(("step_end", state.step, state.epoch, state.batch, state.rows))

    def on_epoch_end(self, state):
        self.events.append(("epoch_end", state.step, state.epoch))

    def on_train_end(self, state):
        self.events.append(("train_end", state.step, state.epoch, state.error is None))


def test_callbacks_are_notified_in_order_with_the_counters():
    X, model, optimizer, compute = _problem(n_samples=10)
    recorder = Recorder()
    state = train(compute, 10, optimizer=optimizer, n_epochs=2, batch_size=4,
                  generator=torch.Generator().manual_seed(0), callbacks=[recorder],
                  start_step=5, start_epoch=1)  # fmt: skip
    # Batches of 4, 4 and 2 rows per epoch; counters continue from the given start.
    expected = [("train_begin", 5, 1), ("epoch_begin", 5, 1)]
    expected += [("step_end", 6, 1, 0, 4), ("step_end", 7, 1, 1, 4), ("step_end", 8, 1, 2, 2)]
    expected += [("epoch_end", 8, 1), ("epoch_begin", 8, 2)]
    expected += [("step_end", 9, 2, 0, 4), ("step_end", 10, 2, 1, 4), ("step_end", 11, 2, 2, 2)]
    expected += [("epoch_end", 11, 2), ("train_end", 11, 3, True)]
    assert recorder.events == expected
    assert (state.step, state.epoch) == (11, 3)


def test_full_batch_epochs_are_single_steps_and_minimise_the_loss():
    X, model, optimizer, compute = _problem()
    history = LogHistory()
    state = train(compute, len(X), optimizer=optimizer, n_epochs=500,
                  callbacks=[CountFlops(lambda rows: 7 * rows, start=3), history])
    assert state.step == state.epoch == 500
    torch.testing.assert_close(model.w.detach(), X.mean(dim=0), atol=1e-4, rtol=0)
    # Logged every 10 epochs, with the cumulative FLOPs.
    assert history.history["step"] == list(range(10, 501, 10))
    assert history.history["flops"][-1] == 3 + 7 * len(X) * 500 == state.flops
    losses = history.history["loss"]
    assert losses[-1] < losses[0]


def test_tol_stops_when_the_loss_stops_improving():
    X, model, optimizer, compute = _problem()
    state = train(compute, len(X), optimizer=optimizer, n_epochs=100_000,
                  callbacks=[LogHistory(tol=1e-6)])
    assert 100 < state.epoch < 100_000
    torch.testing.assert_close(model.w.detach(), X.mean(dim=0), atol=1e-3, rtol=0)
    # Without tol every epoch runs.
    X, model, optimizer, compute = _problem()
    assert train(compute, len(X), optimizer=optimizer, n_epochs=300,
                 callbacks=[LogHistory()]).epoch == 300


def test_divergence_raises_a_clear_error():
    X, model, optimizer, compute = _problem()
    X[0, 0] = float("inf")
    ended = Recorder()
    with pytest.raises(ValueError, match="diverged at step 10.*learning_rate"):
        train(compute, len(X), optimizer=optimizer, n_epochs=50,
              callbacks=[LogHistory(description="quadratic"), ended])
    # The callbacks are told that training ended with an error (the progress bar closes).
    assert ended.events[-1] == ("train_end", 10, 9, False)


def test_resampling_is_called_on_schedule_with_the_latents_dead_over_the_window():
    X, model, optimizer, compute = _problem(n_samples=12)
    X[:, 1] = 0.0  # latent 1 never fires
    X[:6, 2] = 0.0  # latent 2 fires in the second half of the data only
    calls = []
    dead = DeadLatents(3, window=12)
    resample = ResampleDeadLatents(lambda mask: calls.append(mask.tolist()), every=4, dead=dead)
    state = train(compute, 12, optimizer=optimizer, n_epochs=3, batch_size=3,
                  callbacks=[dead, resample], generator=None)  # fmt: skip
    # Without a generator the order is still random: only the schedule is fixed.
    assert state.step == 12
    # Steps 4, 8 and 12 (12 rows each time, the window): latent 1 is dead every time,
    # and after each resampling its window restarts.
    assert len(calls) == 3
    assert all(mask[1] and not mask[0] for mask in calls)
    assert dead.since[1] == 0 and dead.since[0] == 0


def test_a_latent_is_dead_once_it_has_not_fired_for_the_window():
    # Latent 0 fires in every batch, latent 1 only in the first one, latent 2 never.
    codes = iter([torch.tensor([[1.0, 1.0, 0.0]])] + [torch.tensor([[1.0, 0.0, 0.0]])] * 9)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    seen = []

    class Watch(Callback):
        def on_step_end(self, state):
            seen.append(dead.mask.tolist())

    def compute(rows, with_stats):
        param.grad = torch.zeros(1)
        return next(codes), None

    dead = DeadLatents(3, window=16)
    # Batches of 4 rows: 16 rows are 4 steps.
    train(compute, 40, optimizer=optimizer, n_epochs=1, batch_size=4,
          generator=torch.Generator().manual_seed(0), callbacks=[dead, Watch()])  # fmt: skip
    assert seen[2] == [False, False, False]  # 12 rows seen: nothing is dead yet
    assert seen[3] == [False, False, True]  # 16 rows without latent 2
    assert seen[4] == [False, True, True]  # 16 rows since latent 1 fired (in step 1)
    assert dead.fraction() == 2 / 3
    assert dead.since.tolist() == [0, 36, 40]


def test_the_history_logs_the_dead_fraction_of_the_tracker():
    X, model, optimizer, compute = _problem(n_samples=12)
    dead = DeadLatents(3, window=6)
    history = LogHistory(dead=dead)
    X[:, 1] = 0.0
    train(compute, 12, optimizer=optimizer, n_epochs=2, batch_size=3,
          generator=torch.Generator().manual_seed(0), callbacks=[dead, history])  # fmt: skip
    assert history.history["dead_fraction"] == [1 / 3, 1 / 3]


def test_progress_bar_counts_epochs(capsys):
    X, model, optimizer, compute = _problem()
    bar = ProgressBar("quadratic")
    train(compute, len(X), optimizer=optimizer, n_epochs=20, callbacks=[LogHistory(), bar])
    assert "quadratic" in capsys.readouterr().err
    assert bar.bar is None  # closed


class Interrupt(Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, state):
        if state.step == self.at_step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("batch_size, interrupt_at", [(3, 7), (3, 11), (None, 9)])
def test_a_fit_resumed_from_its_checkpoint_equals_an_uninterrupted_one(
    tmp_path, batch_size, interrupt_at
):
    def run(callbacks, resume_from=None):
        X, model, optimizer, compute = _problem(n_samples=8)
        history = LogHistory()
        state = train(
            compute, 8, optimizer=optimizer, n_epochs=12, batch_size=batch_size,
            generator=torch.Generator().manual_seed(0), model=model,
            callbacks=[CountFlops(lambda rows: rows), history, *callbacks],
            resume_from=resume_from,
        )  # fmt: skip
        return model, history.history, state

    whole, whole_history, whole_state = run([])
    path = tmp_path / "checkpoint.pt"
    # Saved every 2 steps, 3 steps an epoch with minibatches; interrupted before the
    # save of that step, after step 7 or 11, or 9 (full batch): the last checkpoint is
    # after step 6 (an epoch's end), 10 (mid-epoch) or 8.
    with pytest.raises(KeyboardInterrupt):
        run([Interrupt(interrupt_at), Checkpoint(path, every=2)])
    resumed, resumed_history, resumed_state = run(
        [Interrupt(-1), Checkpoint(path, every=2)], resume_from=path
    )
    torch.testing.assert_close(resumed.w, whole.w, rtol=0, atol=0)
    assert resumed_history == whole_history
    assert (resumed_state.step, resumed_state.epoch, resumed_state.flops) == (
        whole_state.step, whole_state.epoch, whole_state.flops,
    )  # fmt: skip


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def test_a_mid_epoch_checkpoint_holds_cpu_copies_of_the_training_state(tmp_path):
    # Issue 31, finding 3: the history's running sums were saved as the fit's device
    # tensors (and aliased the live ones); a checkpoint is now device-independent.
    path = tmp_path / "checkpoint.pt"
    _, model, optimizer, compute = _problem(n_samples=9)
    history, dead = LogHistory(), DeadLatents(3, window=100)
    with pytest.raises(KeyboardInterrupt):
        train(compute, 9, optimizer=optimizer, n_epochs=3, batch_size=3, model=model,
              generator=torch.Generator().manual_seed(0),
              callbacks=[history, dead, Interrupt(5), Checkpoint(path, every=4)])  # fmt: skip
    payload = torch.load(path, weights_only=False)
    assert payload["batch"] == 1 and not payload["epoch_done"]  # mid-epoch, after step 4
    saved = payload["callbacks"]["0:LogHistory"]
    assert saved["sums"] is not None and saved["active"] is not None
    tensors = list(_tensors(payload))
    assert len(tensors) >= 6 and all(t.device.type == "cpu" for t in tensors)
    # Copies, not the live state: the fit went on (step 5) after the save.
    assert not torch.equal(saved["sums"], history.sums)


def test_restored_history_and_tracker_follow_the_device_of_the_running_fit():
    # The checkpoint is loaded to the CPU; the next step's statistics are on the fit's
    # device (the meta device stands in for a GPU here): the running sums must move
    # there instead of mixing devices (before the fix: "Tensor on device meta is not on
    # the expected device cpu" or CPU sums silently left behind).
    history = LogHistory()
    history.load_state_dict({
        "history": {key: [] for key in history.history}, "best": [],
        "sums": torch.ones(4, dtype=torch.float64), "active": torch.tensor([True, False]),
        "n_logged_steps": 1,
    })  # fmt: skip

    class _State:
        stats = torch.ones(4, dtype=torch.float64, device="meta")
        codes = torch.ones(3, 2, dtype=torch.float64, device="meta")

    history.on_step_end(_State())
    assert history.sums.device.type == "meta" and history.active.device.type == "meta"
    assert history.n_logged_steps == 2
    dead = DeadLatents(2, window=10, device="meta")
    dead.load_state_dict({"since": torch.tensor([3, 0])})
    assert dead.since.device.type == "meta"
    saved = DeadLatents(2, window=10).state_dict()["since"]
    assert saved.device.type == "cpu"


def test_a_checkpoint_from_other_callbacks_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    X, model, optimizer, compute = _problem()
    train(compute, len(X), optimizer=optimizer, n_epochs=4, model=model,
          callbacks=[LogHistory(), Checkpoint(path, every=2)])
    with pytest.raises(ValueError, match="resume_from"):
        train(compute, len(X), optimizer=optimizer, n_epochs=4, model=model,
              callbacks=[Checkpoint(path, every=2)], resume_from=path)
    with pytest.raises(ValueError, match="last"):
        train(compute, len(X), optimizer=optimizer, n_epochs=4, model=model,
              callbacks=[Checkpoint(path, every=2), LogHistory()])


def _state(n_samples, batch_size, generator=None, optimizer=None):
    from sklearn_sparsegap._training import TrainingState

    return TrainingState(optimizer=optimizer, generator=generator, model=None,
                         n_samples=n_samples, batch_size=batch_size, step=0, epoch=0,
                         end_epoch=1)  # fmt: skip


def test_epoch_batches_cover_every_sample_once_and_replay_from_the_saved_state():
    from sklearn_sparsegap._training import _epoch_batches

    assert _epoch_batches(_state(10, None), None, "cpu") == [None]
    generator = torch.Generator().manual_seed(0)
    state = _state(10, 4, generator)
    batches = _epoch_batches(state, None, "cpu")
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    # A checkpoint taken after the first batch replays the same order, less that batch.
    generator.set_state(state.epoch_generator_state)
    state.batch = 1
    replayed = _epoch_batches(state, None, "cpu")
    assert [b.tolist() for b in replayed] == [b.tolist() for b in batches[1:]]


def test_epoch_batches_of_a_batch_source_skip_the_batches_done():
    from sklearn_sparsegap._batches import TensorBatches
    from sklearn_sparsegap._training import _epoch_batches

    rows = torch.arange(20.0).reshape(10, 2)
    state = _state(10, 4, torch.Generator().manual_seed(0))
    first = list(_epoch_batches(state, TensorBatches(rows), "cpu"))
    assert sum(b.shape[0] for b in first) == 10
    state.generator.set_state(state.epoch_generator_state)
    state.batch = 2
    rest = list(_epoch_batches(state, TensorBatches(rows), "cpu"))
    assert len(rest) == 1 and torch.equal(rest[0], first[2])


def test_train_step_keeps_atoms_on_the_sphere_and_advances_the_counters():
    from sklearn_sparsegap._training import _train_step

    atoms = torch.nn.Parameter(torch.eye(3, dtype=torch.float64))
    optimizer = torch.optim.SGD([atoms], lr=0.5)
    target = torch.ones(3, 3, dtype=torch.float64)
    seen = []

    def compute_gradients(batch, with_stats):
        seen.append(with_stats)
        atoms.grad = atoms.detach() - target  # pulls every atom towards (1, 1, 1)
        return atoms.detach(), None

    class WantStats(Callback):
        def on_step_begin(self, state):
            state.want_stats = True

    recorder = Recorder()
    state = _state(5, None, optimizer=optimizer)
    _train_step(state, None, compute_gradients, (WantStats(), recorder), atoms)
    assert seen == [True]
    torch.testing.assert_close(atoms.detach().norm(dim=1), torch.ones(3, dtype=torch.float64))
    assert not torch.equal(atoms.detach(), torch.eye(3, dtype=torch.float64))
    assert (state.step, state.batch, state.rows) == (1, 1, 5)
    assert recorder.events == [("step_end", 1, 0, 0, 5)]
    # The next step asks for statistics only if a callback wants them again.
    _train_step(state, None, compute_gradients, (recorder,), atoms)
    assert seen == [True, False] and state.step == 2


@pytest.mark.parametrize("max_grad_norm", [None, 0.25])
def test_max_grad_norm_clips_each_step_to_that_norm(max_grad_norm):
    X, model, _, compute = _problem()
    X += 10.0  # far from w=0: the gradient norm starts near 10 * sqrt(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # the step is the gradient
    before = model.w.detach().clone()
    train(compute, 10, optimizer=optimizer, n_epochs=1, max_grad_norm=max_grad_norm)
    moved = float((model.w.detach() - before).norm())
    expected = float(X.mean(dim=0).norm()) if max_grad_norm is None else max_grad_norm
    assert moved == pytest.approx(expected, rel=1e-6)  # torch divides by norm + 1e-6
