"""torch.compile and torch.export of a model built from deeprnn modules."""

import torch
import torch._dynamo.testing

import deeprnn


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = deeprnn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(64, 5)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y)


torch.manual_seed(0)
model = Tagger()

# One graph (fullgraph=True: no graph break, unlike torch.nn.LSTM), and one
# compile for every batch size and sequence length (marked dynamic).
counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
compiled = torch.compile(model, backend=counter, fullgraph=True)
for batch, steps in [(8, 20), (4, 35), (16, 7)]:
    x = torch.randn(batch, steps, 16)
    torch._dynamo.mark_dynamic(x, 0)
    torch._dynamo.mark_dynamic(x, 1)
    torch.testing.assert_close(compiled(x), model(x))
    compiled(x).sum().backward()  # gradients flow through the compiled graph
print("compiled graphs:", counter.frame_count)

# torch.export with a dynamic batch and sequence length.
batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
program = torch.export.export(model.eval(), (torch.randn(8, 20, 16),),
                              dynamic_shapes={"x": {0: batch, 1: steps}})
torch.export.save(program, "tagger_exported.pt2")
loaded = torch.export.load("tagger_exported.pt2").module()
x = torch.randn(3, 50, 16)
torch.testing.assert_close(loaded(x), model(x))
print("exported program matches eager:", tuple(loaded(x).shape))
