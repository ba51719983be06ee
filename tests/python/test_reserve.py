"""The reserve is computed only when a gradient will be taken, is exactly
the size reserve_size documents, and backward computes only what is asked."""

import pytest
import torch

import deeprnn
from deeprnn_test_utils import MODES, OP_NAMES, make_pair


def _saved_numels(run):
    """Numels of every tensor autograd saves while `run()` executes."""
    numels = []

    def pack(t):
        numels.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return numels


def _expected_reserve(mode, T, B, I, H, P, L, bidirectional, dropout):
    return deeprnn.functional.reserve_size(
        OP_NAMES[mode], T, B, I, H, P, L, bidirectional, dropout)


@pytest.mark.parametrize("mode", MODES)
def test_no_reserve_without_gradient(mode):
    torch.manual_seed(0)
    _, ours = make_pair(mode, input_size=5, hidden_size=6, num_layers=2,
                        bidirectional=True)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    # Parameters require grad, but grad mode is off: nothing is saved.
    with torch.no_grad():
        assert _saved_numels(lambda: ours(x)) == []
    # Grad mode on, but nothing requires grad: nothing is saved either.
    for p in ours.parameters():
        p.requires_grad_(False)
    assert _saved_numels(lambda: ours(x)) == []


@pytest.mark.parametrize(
    "mode,proj_size", [(m, 0) for m in MODES] + [("LSTM", 2)])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_reserve_size_matches_saved_reserve(mode, proj_size, dropout):
    torch.manual_seed(0)
    T, B, I, H, L = 4, 3, 5, 6, 3
    _, ours = make_pair(mode, input_size=I, hidden_size=H, num_layers=L,
                        bidirectional=True, proj_size=proj_size,
                        dropout=dropout)
    ours.train()
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    saved = _saved_numels(lambda: ours(x))
    expected = _expected_reserve(mode, T, B, I, H, proj_size, L, True,
                                 dropout > 0)
    assert expected > 0
    # Exactly one saved tensor is the reserve.
    assert saved.count(expected) >= 1, (saved, expected)


@pytest.mark.parametrize("mode", MODES)
def test_backward_computes_only_requested_gradients(mode):
    torch.manual_seed(0)
    _, ours = make_pair(mode, input_size=5, hidden_size=6, num_layers=2)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    params = list(ours._flat_weights)
    h0 = torch.randn(2, 3, 6, dtype=torch.float64)
    c0 = torch.randn(2, 3, 6, dtype=torch.float64) if mode == "LSTM" else None
    output, hy, cy, reserve = torch.ops.deeprnn._rnn_forward(
        x, h0, c0, params, True, 2, 0.0, True, False, False, OP_NAMES[mode],
        True)
    grad_output = torch.randn_like(output)
    gi, ghx, gcx, gparams = torch.ops.deeprnn._rnn_backward(
        x, h0, c0, params, output, reserve, grad_output, None, None, True, 2,
        0.0, True, False, False, OP_NAMES[mode], [True, False, False, False])
    assert gi.shape == x.shape
    assert ghx.numel() == 0 and gcx.numel() == 0 and gparams == []
    # The input gradient does not depend on what else was asked for.
    gi_all, ghx_all, _, gparams_all = torch.ops.deeprnn._rnn_backward(
        x, h0, c0, params, output, reserve, grad_output, None, None, True, 2,
        0.0, True, False, False, OP_NAMES[mode], [True, True, True, True])
    torch.testing.assert_close(gi, gi_all, rtol=0, atol=0)
    assert ghx_all.shape == h0.shape and len(gparams_all) == len(params)


def test_reserve_size_formula():
    # LSTM, 2 layers, bidirectional, projection, dropout: per layer
    # T*B*D*(4H gates + H cells + H pre-projection) plus, below the top
    # layer, the layer output and its dropout mask (P wide each).
    T, B, H, P, D = 7, 5, 6, 2, 2
    per_layer = T * B * D * (4 * H + H + H)
    below_top = T * B * D * (P + P)
    assert deeprnn.functional.reserve_size(
        "lstm", T, B, 3, H, P, 2, True, True) == 2 * per_layer + below_top
    # A vanilla RNN keeps only the outputs of the layers below the top.
    assert deeprnn.functional.reserve_size(
        "rnn_tanh", T, B, 3, H, 0, 3, False, False) == 2 * T * B * H


def test_reserve_size_rejects_bad_arguments():
    with pytest.raises(RuntimeError, match=r"deeprnn.reserve_size: .*proj_size"):
        deeprnn.functional.reserve_size("gru", 3, 2, 4, 6, 2, 1, False, False)
    with pytest.raises(RuntimeError, match=r"unknown mode 'lstmx'"):
        deeprnn.functional.reserve_size("lstmx", 3, 2, 4, 6, 0, 1, False, False)
