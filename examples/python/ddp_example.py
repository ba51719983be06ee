"""deeprnn modules under DistributedDataParallel: two CPU processes (gloo),
each training on its half of every batch, like any torch.nn model."""

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import deeprnn


class Regressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = deeprnn.LSTM(8, 16, num_layers=2, bidirectional=True)
        self.head = torch.nn.Linear(32, 1)

    def forward(self, x):  # x: (seq_len, batch, 8)
        output, _ = self.lstm(x)
        return self.head(output[-1])


def train(rank, world_size, store):
    torch.set_num_threads(1)  # the processes share the machine's cores
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size
    )
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(Regressor())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(10, 16, 8)  # the same global batch on every rank
    target = x.mean(dim=(0, 2)).unsqueeze(1)
    x, target = x[:, rank::world_size], target[rank::world_size]  # this rank's half

    for step in range(1, 4):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()  # gradients are averaged over the ranks here
        optimizer.step()
        if rank == 0:
            print(f"rank 0: step {step} loss {loss.item():.4f}")

    parameters = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(parameters) for _ in range(world_size)]
    dist.all_gather(gathered, parameters)
    if rank == 0:
        same = all(torch.equal(gathered[0], other) for other in gathered)
        print("parameters identical on both ranks:", same)
    # Every rank reaches this point before any tears its group down: a rank
    # that destroys its group while another still talks to it can abort.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    world_size = 2
    with tempfile.TemporaryDirectory() as folder:
        store = os.path.join(folder, "store")
        mp.spawn(train, args=(world_size, store), nprocs=world_size)
