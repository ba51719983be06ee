"""deeprnn's modules under DistributedDataParallel (gloo, 2 CPU processes).

Two ranks each train on half of a fixed batch (tests/python/ddp_worker.py);
their losses and final parameters must equal those of one process training
on the whole batch from the same initial weights, in float64 to 1e-10.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

import deeprnn
from ddp_worker import Model, grads_of, loss_fn

HERE = Path(__file__).resolve().parent
WORLD_SIZE, SEQ_LEN, BATCH, INPUT_SIZE, LR, STEPS = 2, 7, 8, 3, 0.5, 3


def child_env():
    """The environment of a child process that imports deeprnn as the tests
    do: the same library ($DEEPRNN_LIBRARY), one thread each."""
    env = dict(os.environ)
    env["DEEPRNN_LIBRARY"] = deeprnn._library_path
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_ranks(data_path, store, out_paths):
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "ddp_worker.py"),
                "--rank", str(rank),
                "--world-size", str(WORLD_SIZE),
                "--store", str(store),
                "--data", str(data_path),
                "--out", str(out_paths[rank]),
            ],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD_SIZE)
    ]
    logs = []
    try:
        for process in processes:
            logs.append(process.communicate(timeout=120)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for rank, (process, log) in enumerate(zip(processes, logs)):
        assert process.returncode == 0, f"rank {rank} failed:\n{log}"


def single_process(initial_state, x, target):
    """Losses, first-step gradients and final parameters of one process
    training on the whole batch."""
    model = Model(INPUT_SIZE)
    model.load_state_dict(initial_state)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    losses, first_grads = [], None
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = loss_fn(model(x), target)
        loss.backward()
        if first_grads is None:
            first_grads = grads_of(model)
        optimizer.step()
        losses.append(loss.item())
    return losses, first_grads, model.state_dict()


def test_ddp_training_matches_single_process(tmp_path):
    torch.manual_seed(2024)
    initial_state = Model(INPUT_SIZE).state_dict()
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    target = torch.randn(BATCH, 1, dtype=torch.float64)
    data_path = tmp_path / "data.pt"
    torch.save(
        {"initial_state": initial_state, "input_size": INPUT_SIZE, "x": x,
         "target": target, "lr": LR, "steps": STEPS},
        data_path,
    )
    out_paths = [tmp_path / f"rank{rank}.pt" for rank in range(WORLD_SIZE)]
    run_ranks(data_path, tmp_path / "store", out_paths)
    ranks = [torch.load(path) for path in out_paths]
    losses, first_grads, final_state = single_process(initial_state, x, target)

    # The ranks' own gradients differ (different data), and their average is
    # the whole batch's gradient; after DDP's all-reduce every rank holds
    # exactly that average.
    for name, expected in first_grads.items():
        local = [r["local_grads"][name] for r in ranks]
        assert not torch.allclose(local[0], local[1], rtol=1e-3, atol=1e-6), name
        torch.testing.assert_close(
            (local[0] + local[1]) / 2, expected, rtol=1e-10, atol=1e-12
        )
        assert torch.equal(ranks[0]["synced_grads"][name], ranks[1]["synced_grads"][name])
        torch.testing.assert_close(
            ranks[0]["synced_grads"][name], expected, rtol=1e-10, atol=1e-12
        )

    # Per step, the mean of the ranks' losses is the whole batch's loss.
    rank_mean = [sum(step) / WORLD_SIZE for step in zip(*(r["losses"] for r in ranks))]
    assert len(rank_mean) == STEPS
    torch.testing.assert_close(rank_mean, losses, rtol=1e-10, atol=1e-12)
    assert losses[-1] < losses[0]  # it did train

    for name, expected in final_state.items():
        assert torch.equal(ranks[0]["final_state"][name], ranks[1]["final_state"][name])
        torch.testing.assert_close(
            ranks[0]["final_state"][name], expected, rtol=1e-10, atol=1e-12
        )
        assert not torch.equal(expected, initial_state[name]), f"{name} never moved"
