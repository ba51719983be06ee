"""Save a model built from deeprnn modules for a C++ program (no Python).

Then, from the shell:  build/deeprnn-run tagger.pt inputs.pt --output out.pt
and back in Python, torch.load("out.pt") equals torch.load("expected.pt").
"""

import torch

import deeprnn


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = deeprnn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return self.head(y)  # tag scores per step


torch.manual_seed(0)
model = Tagger().eval()
x = torch.randn(2, 7, 16)  # (batch, seq_len, features)

torch.jit.script(model).save("tagger.pt")  # or torch.jit.trace(model, (x,))
torch.save((x,), "inputs.pt")  # the argument list, for deeprnn-run
torch.save(model(x), "expected.pt")
print("saved tagger.pt and inputs.pt; scores", tuple(model(x).shape))
