"""deeprnn under torch.autocast: float32 weights, bfloat16 compute, float32
gradients, as with torch.nn.LSTM."""

import torch

import deeprnn

torch.manual_seed(0)
lstm = deeprnn.LSTM(10, 20, num_layers=2, bidirectional=True)  # float32
x = torch.randn(5, 3, 10)  # (seq_len, batch, input_size)

with torch.autocast("cpu", dtype=torch.bfloat16):
    output, (h_n, c_n) = lstm(x)  # runs in bfloat16
loss = output.float().pow(2).mean()
loss.backward()  # outside the autocast region, as usual

full_precision, _ = lstm(x)
error = (output.float() - full_precision).norm() / full_precision.norm()
assert error < 1e-2

print("output", output.dtype, tuple(output.shape))  # torch.bfloat16 (5, 3, 40)
print("weight_ih_l0.grad", lstm.weight_ih_l0.grad.dtype)  # torch.float32
print(f"relative error {error:.1e}: within bfloat16 rounding of float32")
