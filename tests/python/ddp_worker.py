"""One rank of the DistributedDataParallel test (tests/python/test_ddp.py).

Run as a script, once per rank:

    python ddp_worker.py --rank R --world-size W --store FILE --data DATA --out OUT

It trains the model of ``DATA`` (initial state, global batch, learning rate,
steps) with DistributedDataParallel over gloo on its share of the batch, and
saves to ``OUT`` its per-step losses, its gradients of the first step before
and after the all-reduce, and its final parameters. The test imports this
file too, for the model and the training step its single-process reference
uses.
"""

import argparse
import datetime
import importlib.util
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


def import_deeprnn():
    """``deeprnn`` as the tests import it (see conftest.py): the installed
    package, else the source folder ops/; either loads the library in
    $DEEPRNN_LIBRARY when it is set."""
    if "deeprnn" in sys.modules:
        return sys.modules["deeprnn"]
    try:
        import deeprnn

        return deeprnn
    except ModuleNotFoundError as error:
        if error.name != "deeprnn":
            raise
    spec = importlib.util.spec_from_file_location(
        "deeprnn",
        REPO_ROOT / "ops" / "__init__.py",
        submodule_search_locations=[str(REPO_ROOT / "ops")],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["deeprnn"] = module
    spec.loader.exec_module(module)
    return module


deeprnn = import_deeprnn()


class Model(torch.nn.Module):
    """A stacked bidirectional LSTM, a GRU over its outputs, a linear head on
    the GRU's last state."""

    def __init__(self, input_size=3, dtype=torch.float64):
        super().__init__()
        self.lstm = deeprnn.LSTM(
            input_size, 5, num_layers=2, bidirectional=True, dtype=dtype
        )
        self.gru = deeprnn.GRU(10, 4, dtype=dtype)
        self.head = torch.nn.Linear(4, 1, dtype=dtype)

    def forward(self, x):  # x: (T, B, input_size) -> (B, 1)
        features, _ = self.lstm(x)
        _, h_n = self.gru(features)
        return self.head(h_n[-1])


def loss_fn(prediction, target):
    # A mean over the batch: with equal shares, the mean of the ranks' losses
    # is the loss of the whole batch, and DDP's averaged gradient its gradient.
    return torch.nn.functional.mse_loss(prediction, target)


def shard(x, target, rank, world_size):
    """Rank ``rank``'s contiguous share of the batch (batch is dim 1 of x)."""
    per_rank = x.size(1) // world_size
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    return x[:, rows], target[rows]


def grads_of(module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--store", required=True, help="file for the FileStore")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    # The ranks share the machine's cores.
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{args.store}",
        rank=args.rank,
        world_size=args.world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    data = torch.load(args.data)
    model = Model(data["input_size"])
    model.load_state_dict(data["initial_state"])
    x, target = shard(data["x"], data["target"], args.rank, args.world_size)

    # This rank's own gradient, before any all-reduce.
    loss_fn(model(x), target).backward()
    local_grads = grads_of(model)
    model.zero_grad()

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=data["lr"])
    losses, synced_grads = [], None
    for _ in range(data["steps"]):
        optimizer.zero_grad()
        loss = loss_fn(ddp(x), target)
        loss.backward()  # DDP averages the gradients over the ranks here
        if synced_grads is None:
            synced_grads = grads_of(model)
        optimizer.step()
        losses.append(loss.item())

    torch.save(
        {
            "losses": losses,
            "local_grads": local_grads,
            "synced_grads": synced_grads,
            "final_state": {k: v.clone() for k, v in model.state_dict().items()},
        },
        args.out,
    )
    # Both ranks reach the end before either tears gloo down: a rank that
    # destroyed its group while the other still talked to it can die at
    # exit ("terminate called without an active exception": rank 0, once, in
    # a full test run on the 2-core VM, 2026-11-22).
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
