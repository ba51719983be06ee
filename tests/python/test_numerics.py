"""The CPU kernels' float activations (vectorised approximations, see
csrc/cpu/fast_math.h) against exact math, and the behaviour on extreme
inputs: no NaN or inf where torch.nn has none, NaN where torch.nn has NaN."""

import pytest
import torch

from deeprnn_test_utils import MODES, OP_NAMES, make_pair


def _sweep(lo=-100.0, hi=100.0, n=400001):
    return torch.linspace(lo, hi, n)


def test_tanh_accuracy_over_the_float_range():
    # A 1-unit tanh RNN with w_ih = 1, w_hh = 0 computes tanh(x) per step.
    x = _sweep()
    params = [torch.ones(1, 1), torch.zeros(1, 1)]
    out = torch.ops.deeprnn.rnn_tanh(
        x.view(-1, 1, 1), None, params, False, 1, 0.0, False, False, False)[0]
    err = (out.flatten().double() - torch.tanh(x.double())).abs()
    assert err.max().item() < 2e-7


def test_sigmoid_accuracy_over_the_float_range():
    # A 1-unit GRU with only the update gate fed (z = sigmoid(x)), n = 0 and
    # h0 = 1 outputs h = (1 - z) * 0 + z * 1 = sigmoid(x) at the first step.
    x = _sweep()
    w_ih = torch.tensor([[0.0], [1.0], [0.0]])
    params = [w_ih, torch.zeros(3, 1)]
    h0 = torch.ones(1, x.numel(), 1)
    out = torch.ops.deeprnn.gru(
        x.view(1, -1, 1), h0, params, False, 1, 0.0, False, False, False)[0]
    exact = torch.sigmoid(x.double())
    err = (out.flatten().double() - exact).abs()
    assert err.max().item() < 2e-7
    # Relative accuracy where sigmoid is small but well above underflow.
    moderate = (x > -60) & (x < 0)
    rel = err[moderate] / exact[moderate]
    assert rel.max().item() < 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [1e2, 1e6, 1e30])
def test_large_and_infinite_inputs_saturate_like_torch_nn(mode, scale):
    torch.manual_seed(0)
    reference, ours = make_pair(mode, dtype=torch.float32, input_size=3,
                                hidden_size=5, num_layers=2,
                                bidirectional=True)
    x = torch.randn(6, 2, 3) * scale
    x[0, 0, 0] = float("inf")
    x[3, 1, 2] = -float("inf")
    expected = reference(x)[0]
    got = ours(x)[0]
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.isinf(), expected.isinf())
    finite = expected.isfinite()
    torch.testing.assert_close(got[finite], expected[finite], rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_nan_propagates_like_torch_nn(mode):
    torch.manual_seed(0)
    reference, ours = make_pair(mode, dtype=torch.float32, input_size=3,
                                hidden_size=5)
    x = torch.randn(5, 3, 3)
    x[2, 1, 0] = float("nan")
    expected = reference(x)[0]
    got = ours(x)[0]
    assert expected.isnan().any()
    assert torch.equal(got.isnan(), expected.isnan())
