"""AOTInductor: compile an exported deeprnn model into a package that a C++
program loads (torch::inductor::AOTIModelPackageLoader, or deeprnn-run).

Then, from the shell:  build/deeprnn-run tagger.pt2 inputs.pt --output out.pt
"""

import torch

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
model = Tagger().eval()
batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
program = torch.export.export(model, (torch.randn(8, 20, 16),),
                              dynamic_shapes={"x": {0: batch, 1: steps}})
path = torch._inductor.aoti_compile_and_package(program, package_path="tagger.pt2")

runner = torch._inductor.aoti_load_package(path)  # the same package, from Python
x = torch.randn(3, 50, 16)
with torch.no_grad():
    torch.testing.assert_close(runner(x), model(x))
torch.save((x,), "inputs.pt")
torch.save(model(x).detach(), "expected.pt")
print("packaged", path, "- runs at other sizes:", tuple(runner(x).shape))
