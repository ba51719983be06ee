#!/usr/bin/env python3
"""deeprnn demo: the same model trained twice, with deeprnn and with torch.nn.

A 2-layer bidirectional LSTM learns the adding problem (Hochreiter &
Schmidhuber): each sequence carries random values in [0, 1] and two markers;
the target is the sum of the two marked values, which can lie up to
``seq_len`` steps apart, so the network must carry them in its state. Both
runs start from the same weights (torch.nn's state_dict loaded into
deeprnn.LSTM) and see the same batches in the same order, so their loss
curves should lie on top of each other; what differs is the time they take.

Writes ``loss_curves.png`` and ``metrics.json`` into the output directory
(default ``out/demo/``).
"""

import argparse
import copy
import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import deeprnn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=30)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "float64"],
                        default="float64")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    return parser.parse_args()


def adding_problem(generator, batches, batch_size, seq_len):
    """(inputs (batches, batch, seq_len, 2), targets (batches, batch, 1))."""
    values = torch.rand(batches, batch_size, seq_len, generator=generator)
    # One marker in each half of the sequence, so the two marked values are
    # on average seq_len / 2 steps apart.
    half = seq_len // 2
    first = torch.randint(0, half, (batches, batch_size), generator=generator)
    second = torch.randint(half, seq_len, (batches, batch_size),
                           generator=generator)
    markers = torch.zeros_like(values)
    markers.scatter_(2, first.unsqueeze(2), 1.0)
    markers.scatter_(2, second.unsqueeze(2), 1.0)
    inputs = torch.stack([values, markers], dim=3)
    targets = (values * markers).sum(dim=2, keepdim=True)
    return inputs, targets


class Regressor(torch.nn.Module):
    """A recurrent encoder (batch_first) and a linear head on its final
    hidden states, both directions of the last layer."""

    def __init__(self, rnn, hidden_size):
        super().__init__()
        self.rnn = rnn
        self.head = torch.nn.Linear(2 * hidden_size, 1)

    def forward(self, x):
        _, (h_n, _) = self.rnn(x)
        last_layer = torch.cat([h_n[-2], h_n[-1]], dim=1)
        return self.head(last_layer)


def train(name, model, inputs, targets, args):
    """Trains in place; returns per-step losses and per-epoch seconds."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses, epoch_seconds = [], []
    total_steps = args.epochs * args.steps_per_epoch
    bar = tqdm(total=total_steps, desc=f"{name:>8}", unit="step",
               dynamic_ncols=True)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        for step in range(args.steps_per_epoch):
            index = epoch * args.steps_per_epoch + step
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(inputs[index]),
                                                targets[index])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            elapsed = time.perf_counter() - start
            throughput = (step + 1) * args.batch_size / elapsed
            bar.set_postfix(loss=f"{losses[-1]:.4f}",
                            seq_per_s=f"{throughput:,.0f}", refresh=False)
            bar.update()
        epoch_seconds.append(time.perf_counter() - start)
    bar.close()
    return losses, epoch_seconds


def warm_up(model, inputs, targets):
    """A few untimed steps on a copy, so that neither run's first epoch
    pays for thread-pool start-up and first allocations."""
    model = copy.deepcopy(model)
    for index in range(3):
        loss = torch.nn.functional.mse_loss(model(inputs[index]),
                                            targets[index])
        loss.backward()


def mean(values):
    return sum(values) / len(values)


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    total_steps = args.epochs * args.steps_per_epoch
    print(f"deeprnn demo: 2-layer bidirectional LSTM, adding problem, "
          f"seq_len {args.seq_len}, batch {args.batch_size}, hidden "
          f"{args.hidden_size}, {total_steps} steps; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    generator = torch.Generator().manual_seed(args.seed)
    inputs, targets = adding_problem(generator, total_steps, args.batch_size,
                                     args.seq_len)

    lstm_options = dict(input_size=2, hidden_size=args.hidden_size,
                        num_layers=2, bidirectional=True, batch_first=True)
    reference = Regressor(torch.nn.LSTM(**lstm_options), args.hidden_size)
    ours = Regressor(deeprnn.LSTM(**lstm_options), args.hidden_size)
    ours.rnn.load_state_dict(reference.rnn.state_dict())
    ours.head = copy.deepcopy(reference.head)
    dtype = getattr(torch, args.dtype)
    ours.to(dtype)
    reference.to(dtype)
    inputs, targets = inputs.to(dtype), targets.to(dtype)

    for model in (ours, reference):
        warm_up(model, inputs, targets)
    results = {}
    for name, model in (("deeprnn", ours), ("torch.nn", reference)):
        losses, seconds = train(name, model, inputs, targets, args)
        results[name] = {"losses": losses, "epoch_seconds": seconds}

    ours_losses = results["deeprnn"]["losses"]
    ref_losses = results["torch.nn"]["losses"]
    max_difference = max(abs(a - b) for a, b in zip(ours_losses, ref_losses))
    # Rounding differences (float32: ~1e-7) grow as training goes on, fastest
    # where the loss drops steeply; how long the runs agree to 1e-4 shows it.
    agree_steps = next(
        (i for i, (a, b) in enumerate(zip(ours_losses, ref_losses))
         if abs(a - b) > 1e-4 * abs(b)),
        total_steps)

    header = (f"{'epoch':>5} {'steps':>9} | {'loss deeprnn':>12} "
              f"{'loss torch.nn':>13} | {'s/epoch deeprnn':>15} "
              f"{'s/epoch torch.nn':>16} {'speedup':>7}")
    print()
    print(header)
    print("-" * len(header))
    for epoch in range(args.epochs):
        steps = slice(epoch * args.steps_per_epoch,
                      (epoch + 1) * args.steps_per_epoch)
        ours_seconds = results["deeprnn"]["epoch_seconds"][epoch]
        ref_seconds = results["torch.nn"]["epoch_seconds"][epoch]
        print(f"{epoch + 1:>5} {steps.start + 1:>4}-{steps.stop:<4} | "
              f"{mean(ours_losses[steps]):>12.5f} "
              f"{mean(ref_losses[steps]):>13.5f} | "
              f"{ours_seconds:>15.3f} {ref_seconds:>16.3f} "
              f"{ref_seconds / ours_seconds:>6.2f}x")
    ours_total = sum(results["deeprnn"]["epoch_seconds"])
    ref_total = sum(results["torch.nn"]["epoch_seconds"])
    print("-" * len(header))
    print(f"total: deeprnn {ours_total:.2f} s, torch.nn {ref_total:.2f} s "
          f"(speedup {ref_total / ours_total:.2f}x)")
    print(f"the loss curves agree to 1e-4 (relative) for {agree_steps} of "
          f"{total_steps} steps; largest per-step difference "
          f"{max_difference:.2e}")

    args.out.mkdir(parents=True, exist_ok=True)
    figure_path = args.out / "loss_curves.png"
    steps_axis = range(1, total_steps + 1)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    panels = ((axes[0], "deeprnn", "tab:blue", "torch.nn"),
              (axes[1], "torch.nn", "tab:orange", "deeprnn"))
    for axis, name, color, other in panels:
        seconds = sum(results[name]["epoch_seconds"])
        axis.plot(steps_axis, results[other]["losses"], color="0.75",
                  linewidth=1, label=other)
        axis.plot(steps_axis, results[name]["losses"], color=color,
                  linewidth=1, label=name)
        axis.legend(loc="upper right")
        axis.set_title(f"{name}: {seconds:.1f} s, final loss "
                       f"{mean(results[name]['losses'][-args.steps_per_epoch:]):.4f}")
        axis.set_xlabel("step")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("MSE loss")
    figure.suptitle("2-layer bidirectional LSTM on the adding problem "
                    f"(seq_len {args.seq_len}, {args.dtype})\nsame initial "
                    f"weights and batches; losses agree to 1e-4 for "
                    f"{agree_steps}/{total_steps} steps")
    figure.tight_layout()
    figure.savefig(figure_path, dpi=100)
    plt.close(figure)

    metrics_path = args.out / "metrics.json"
    metrics = {
        "task": "adding problem",
        "model": {**lstm_options, "head": "Linear(2*hidden_size, 1)"},
        "config": {k: (str(v) if isinstance(v, Path) else v)
                   for k, v in vars(args).items()},
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "max_abs_loss_difference": max_difference,
        "steps_agreeing_to_1e-4": agree_steps,
        "speedup": ref_total / ours_total,
        "runs": {
            name: {
                "final_epoch_mean_loss": mean(
                    result["losses"][-args.steps_per_epoch:]),
                "total_seconds": sum(result["epoch_seconds"]),
                "sequences_per_second": total_steps * args.batch_size
                / sum(result["epoch_seconds"]),
                **result,
            }
            for name, result in results.items()
        },
    }
    metrics_path.write_text(json.dumps(metrics, indent=2))
    print(f"wrote {figure_path}")
    print(f"wrote {metrics_path}")
    if not math.isfinite(max_difference):
        raise SystemExit("deeprnn demo: a loss is not finite")


if __name__ == "__main__":
    main()
