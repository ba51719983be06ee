"""Sentences of different lengths through a bidirectional deeprnn.LSTM:
a padded batch with lengths=, or a PackedSequence as with torch.nn."""

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

import deeprnn

torch.manual_seed(0)
embedding = torch.nn.Embedding(100, 8)
lstm = deeprnn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True)

# Four sentences of word ids, of different lengths, in no particular order.
sentences = [torch.randint(0, 100, (n,)) for n in (5, 9, 3, 7)]
lengths = torch.tensor([len(s) for s in sentences])  # int64, any order
x = embedding(pad_sequence(sentences, batch_first=True))  # (4, 9, 8)

# 1. The padded batch and its lengths: no packing, no sorting.
output, (h_n, c_n) = lstm(x, lengths=lengths)

# 2. The same batch packed, exactly as torch.nn.LSTM takes it.
packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
packed_output, (packed_h_n, packed_c_n) = lstm(packed)
unpacked, _ = pad_packed_sequence(packed_output, batch_first=True)

torch.testing.assert_close(output, unpacked)
torch.testing.assert_close(h_n, packed_h_n)
torch.testing.assert_close(c_n, packed_c_n)

# Past its end a sentence's output is zero, and h_n holds the forward state
# at its last word (the reverse direction starts there).
last_word = output[torch.arange(4), lengths - 1, :16]
print("output", tuple(output.shape), "h_n", tuple(h_n.shape))  # (4, 9, 32) (4, 4, 16)
print("zero past each end:", bool((output[2, 3:] == 0).all()))
print("h_n is the state at each sentence's last word:", torch.equal(last_word, h_n[-2]))
print("lengths= and PackedSequence agree")
