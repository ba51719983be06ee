"""One and two steps per call, as in autoregressive decoding, against torch.nn.

The CPU kernels prepare their weights differently below a few steps (no
packed panels, no contiguous copy of W_hh^T: cpu/rnn_cpu.cpp), and a single
step computes dW_hh from h0 alone (common/layers.cpp). Here every output,
final state and gradient (input, initial states, every parameter) of those
short calls must match torch.nn with the same weights, in float64 (the
summation order is the only difference) and float32.
"""

import pytest
import torch

from deeprnn_test_utils import call, make_pair, random_states

MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]
TOLERANCE = {torch.float64: dict(atol=1e-10, rtol=1e-10),
             torch.float32: dict(atol=2e-5, rtol=1e-4)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("mode", MODES)
def test_short_calls_match_torch_nn_in_both_passes(mode, bidirectional, steps, dtype):
    torch.manual_seed(steps * 10 + MODES.index(mode) + 100 * bidirectional)
    batch, size, layers = 3, 24, 2
    reference, ours = make_pair(mode, dtype=dtype, input_size=size, hidden_size=size,
                                num_layers=layers, bidirectional=bidirectional)
    x = torch.randn(steps, batch, size, dtype=dtype)
    h0, c0 = random_states(mode, batch, layers, bidirectional, size, 0, dtype)
    grads = []
    outputs = []
    for module in (reference, ours):
        module.zero_grad()
        inputs = [t.clone().requires_grad_() for t in (x, h0, c0) if t is not None]
        result = call(module, mode, *inputs)
        weights = [torch.randn_like(r, generator=torch.Generator().manual_seed(i))
                   for i, r in enumerate(result)]
        sum((r * w).sum() for r, w in zip(result, weights)).backward()
        outputs.append(result)
        grads.append([t.grad for t in inputs] + [p.grad for p in module.parameters()])
    for actual, expected in zip(outputs[1], outputs[0]):
        torch.testing.assert_close(actual, expected, **TOLERANCE[dtype])
    for actual, expected in zip(grads[1], grads[0]):
        torch.testing.assert_close(actual, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_one_step_with_lengths_matches_torch_nn_packed(bidirectional):
    torch.manual_seed(7 + bidirectional)
    reference, ours = make_pair("GRU", input_size=6, hidden_size=5, num_layers=2,
                                bidirectional=bidirectional)
    x = torch.randn(1, 4, 6, dtype=torch.float64)
    lengths = torch.ones(4, dtype=torch.int64)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    packed = torch.nn.utils.rnn.pack_padded_sequence(xs[0], lengths, enforce_sorted=False)
    out_ref, h_ref = reference(packed)
    out_ref, _ = torch.nn.utils.rnn.pad_packed_sequence(out_ref, total_length=1)
    out, h = ours(xs[1], lengths=lengths)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=1e-10)
    for y, hy in ((out_ref, h_ref), (out, h)):
        (y.sum() + (hy * hy).sum()).backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad, atol=1e-10, rtol=1e-10)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=1e-10, msg=name)
