"""Layers of different sizes, merged directions and the last step only:
a deep RNN as the seeds draw it, which torch.nn cannot build in one module."""

import torch

import deeprnn

torch.manual_seed(0)
x = torch.randn(4, 7, 3)  # (batch, steps, features): 3-dimensional inputs

# The seed's stack: Layer 1 has 3 units, Layer 2 has 2 units.
lstm = deeprnn.LSTM(3, [3, 2], num_layers=2, batch_first=True)
output, (h_n, c_n) = lstm(x)  # one state per layer: the sizes differ
print(lstm)  # LSTM(3, [3, 2], num_layers=2, batch_first=True)
# Input (3) -> layer 1 (3 units) -> layer 2 (2 units), per gate 3x3 then 3x2.
print("weight_ih_l0", tuple(lstm.weight_ih_l0.shape))  # (12, 3): 4 gates x 3 units
print("weight_ih_l1", tuple(lstm.weight_ih_l1.shape))  # (8, 3): 4 gates x 2 units
print("output", tuple(output.shape))  # (4, 7, 2)
print("h_n", [tuple(h.shape) for h in h_n])  # [(1, 4, 3), (1, 4, 2)]

# Bidirectional, the two directions summed (not concatenated) between the
# layers and in the output, and only the last step returned (Keras'
# return_sequences=False): one vector per sequence, ready for a classifier.
gru = deeprnn.GRU(3, [8, 4], num_layers=2, batch_first=True, bidirectional=True,
                  merge_mode="sum", return_sequences=False)
lengths = torch.tensor([7, 3, 5, 6])  # each sequence's own last step
last, h_n = gru(x, lengths=lengths)
print(gru)
print("last", tuple(last.shape))  # (4, 4): batch, 4 features (summed)
print("h_n", [tuple(h.shape) for h in h_n])  # [(2, 4, 8), (2, 4, 4)]
# The last step is the last layer's final states, forward + reverse.
print("last == h_n[-1][0] + h_n[-1][1]:", torch.equal(last, h_n[-1][0] + h_n[-1][1]))
