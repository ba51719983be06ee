"""Dropout: between layers only, in training only, seeded by torch.manual_seed."""

import pytest
import torch

import deeprnn
from deeprnn_test_utils import MODES, call, classes, make_pair, module_kwargs, random_states

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 5, 3, 4, 6, 3


def _kwargs(mode, **extra):
    kwargs = dict(input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, bidirectional=True,
                  proj_size=PROJ_SIZE if mode == "LSTM" else 0)
    kwargs.update(extra)
    return kwargs


@pytest.mark.parametrize("mode", MODES)
def test_single_layer_dropout_is_a_no_op_and_warns(mode):
    torch.manual_seed(0)
    torch_cls, our_cls = classes(mode)
    kwargs = module_kwargs(mode, **_kwargs(mode, num_layers=1, dropout=0.5))
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        reference = torch_cls(**kwargs, dtype=torch.float64)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        ours = our_cls(**kwargs, dtype=torch.float64)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    ours.train()
    reference.train()
    trained = call(ours, mode, x)
    for got, expected in zip(trained, call(reference, mode, x)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    ours.eval()
    for got, expected in zip(trained, call(ours, mode, x)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_dropout_acts_in_training_only_and_is_seeded(mode):
    torch.manual_seed(1)
    _, ours = make_pair(mode, **_kwargs(mode, num_layers=2, dropout=0.5))
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    h0, c0 = random_states(mode, BATCH, 2, True, HIDDEN_SIZE,
                           PROJ_SIZE if mode == "LSTM" else 0, torch.float64)

    ours.eval()
    evaluated = call(ours, mode, x, h0, c0)
    again = call(ours, mode, x, h0, c0)
    for a, b in zip(evaluated, again):
        assert torch.equal(a, b)  # eval is deterministic

    ours.train()
    torch.manual_seed(123)
    first = call(ours, mode, x, h0, c0)
    torch.manual_seed(123)
    second = call(ours, mode, x, h0, c0)
    torch.manual_seed(124)
    other_seed = call(ours, mode, x, h0, c0)
    for a, b in zip(first, second):
        assert torch.equal(a, b)  # the same seed reproduces the run
    assert not torch.allclose(first[0], evaluated[0])  # dropout changed something
    assert not torch.allclose(first[0], other_seed[0])  # masks follow the seed
    # Layer 0 never sees dropout: its final states are those of eval mode.
    torch.testing.assert_close(first[1][:2], evaluated[1][:2], rtol=1e-12, atol=1e-12)
    if mode == "LSTM":
        torch.testing.assert_close(first[2][:2], evaluated[2][:2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_dropout_one_zeroes_the_second_layer_input(mode):
    """With dropout=1 layer 1 runs on zeros: a 1-layer RNN on zero input."""
    torch.manual_seed(2)
    proj = PROJ_SIZE if mode == "LSTM" else 0
    reference, ours = make_pair(mode, **_kwargs(mode, num_layers=2, dropout=1.0))
    out_size = proj or HIDDEN_SIZE
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
    h0, c0 = random_states(mode, BATCH, 2, True, HIDDEN_SIZE, proj, torch.float64)
    ours.train()
    results = call(ours, mode, x, h0, c0)

    # Hand-built expectation: torch.nn's single layer with layer 1's weights.
    torch_cls, _ = classes(mode)
    layer1 = torch_cls(**module_kwargs(mode, **_kwargs(mode, num_layers=1,
                                                       input_size=2 * out_size)),
                       dtype=torch.float64)
    layer1.load_state_dict({
        name.replace("_l1", "_l0"): value
        for name, value in reference.state_dict().items() if "_l1" in name
    })
    zeros = torch.zeros(SEQ_LEN, BATCH, 2 * out_size, dtype=torch.float64)
    expected = call(layer1, mode, zeros, h0[2:], c0[2:] if c0 is not None else None)
    torch.testing.assert_close(results[0], expected[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(results[1][2:], expected[1], rtol=1e-10, atol=1e-10)
    if mode == "LSTM":
        torch.testing.assert_close(results[2][2:], expected[2], rtol=1e-10, atol=1e-10)

    # Layer 0's states are untouched by dropout; torch.nn agrees on the whole.
    reference.train()
    torch_results = call(reference, mode, x, h0, c0)
    for got, want in zip(results, torch_results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

    # Nothing flows from the output back to the input through a zeroed layer.
    (grad_x,) = torch.autograd.grad(results[0], x, torch.randn_like(results[0]))
    assert torch.count_nonzero(grad_x) == 0


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_masks_and_scaling(bidirectional):
    """Reads the mask back through an identity second layer.

    Layer 1 of a tanh RNN with W_ih = identity (per direction), W_hh = 0 and no
    bias outputs tanh(x1) where x1 = mask * y0 / (1 - p) is its input and y0
    layer 0's output; atanh recovers x1 exactly.
    """
    p = 0.4
    torch.manual_seed(3)
    D = 2 if bidirectional else 1
    H = 8
    model = deeprnn.RNN(INPUT_SIZE, H, num_layers=2, bias=False, dropout=p,
                        bidirectional=bidirectional, dtype=torch.float64)
    with torch.no_grad():
        model.weight_hh_l1.zero_()
        model.weight_ih_l1.zero_()
        model.weight_ih_l1[:, :H] = torch.eye(H)
        if bidirectional:
            model.weight_hh_l1_reverse.zero_()
            model.weight_ih_l1_reverse.zero_()
            model.weight_ih_l1_reverse[:, H:] = torch.eye(H)
    layer0 = deeprnn.RNN(INPUT_SIZE, H, num_layers=1, bias=False,
                         bidirectional=bidirectional, dtype=torch.float64)
    layer0.load_state_dict({k: v for k, v in model.state_dict().items() if "_l0" in k})

    x = torch.randn(40, 25, INPUT_SIZE, dtype=torch.float64)
    y0, _ = layer0(x)
    model.train()
    with torch.no_grad():
        output, _ = model(x)
    x1 = torch.atanh(output)
    kept = x1 != 0
    fraction_dropped = 1.0 - kept.double().mean().item()
    assert abs(fraction_dropped - p) < 0.03, fraction_dropped
    torch.testing.assert_close(x1[kept], (y0 / (1 - p))[kept], rtol=1e-8, atol=1e-8)
    assert output.shape == (40, 25, D * H)
