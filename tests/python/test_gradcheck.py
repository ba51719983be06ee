"""torch.autograd.gradcheck of the public operators in float64."""

import pytest
import torch
from torch.autograd import gradcheck

from deeprnn_test_utils import MODES, make_pair, op_args, public_op, random_states

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 3, 2, 3, 4, 2


def _setup(mode, proj, bias=True, batch_first=False, num_layers=2, bidirectional=True):
    torch.manual_seed(2024)
    _, ours = make_pair(
        mode,
        input_size=INPUT_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        proj_size=proj,
    )
    params = [p.detach().clone() for p in ours.parameters()]
    shape = (BATCH, SEQ_LEN, INPUT_SIZE) if batch_first else (SEQ_LEN, BATCH, INPUT_SIZE)
    x = torch.randn(shape, dtype=torch.float64)
    h0, c0 = random_states(
        mode, BATCH, num_layers, bidirectional, HIDDEN_SIZE, proj, torch.float64
    )
    return x, h0, c0, params


def _function(mode, num_params, bias, num_layers, dropout, train, bidirectional,
              batch_first, has_state, seed=None):
    """f(x, [h0, [c0]], *params) -> results of the public operator."""
    op = public_op(mode)

    def f(*tensors):
        x = tensors[0]
        h0 = c0 = None
        rest = tensors[1:]
        if has_state:
            h0, rest = rest[0], rest[1:]
            if mode == "LSTM":
                c0, rest = rest[0], rest[1:]
        params = list(rest)
        assert len(params) == num_params
        if seed is not None:
            torch.manual_seed(seed)  # the same dropout masks on every call
        return op(*op_args(mode, x, h0, c0, params, bias, num_layers, dropout,
                           train, bidirectional, batch_first))

    return f


def _cases():
    for mode in MODES:
        projs = [0, PROJ_SIZE] if mode == "LSTM" else [0]
        for proj in projs:
            for bias, batch_first in [(True, False), (False, True)]:
                yield pytest.param(
                    mode, proj, bias, batch_first,
                    id=f"{mode}-proj{proj}-{'bias' if bias else 'nobias'}"
                    f"-{'bf' if batch_first else 'sf'}",
                )


@pytest.mark.parametrize("mode, proj, bias, batch_first", list(_cases()))
def test_gradcheck_all_inputs(mode, proj, bias, batch_first):
    x, h0, c0, params = _setup(mode, proj, bias=bias, batch_first=batch_first)
    tensors = [x, h0] + ([c0] if mode == "LSTM" else []) + params
    tensors = [t.requires_grad_() for t in tensors]
    f = _function(mode, len(params), bias, 2, 0.0, True, True, batch_first, True)
    assert gradcheck(f, tensors, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_some_inputs(mode):
    """Only some arguments need a gradient (the rest are skipped in backward)."""
    proj = PROJ_SIZE if mode == "LSTM" else 0
    x, h0, c0, params = _setup(mode, proj)
    tensors = [x, h0] + ([c0] if mode == "LSTM" else []) + params
    # input and every other parameter; the states do not need gradients.
    x.requires_grad_()
    for p in params[::2]:
        p.requires_grad_()
    f = _function(mode, len(params), True, 2, 0.0, True, True, False, True)
    assert gradcheck(f, tensors, eps=1e-6, atol=1e-6, rtol=1e-5)

    # Only the initial states.
    x, h0, c0, params = _setup(mode, proj)
    h0.requires_grad_()
    if c0 is not None:
        c0.requires_grad_()
    tensors = [x, h0] + ([c0] if mode == "LSTM" else []) + params
    assert gradcheck(f, tensors, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_without_initial_state(mode):
    proj = PROJ_SIZE if mode == "LSTM" else 0
    x, _, _, params = _setup(mode, proj)
    tensors = [t.requires_grad_() for t in [x] + params]
    f = _function(mode, len(params), True, 2, 0.0, True, True, False, False)
    assert gradcheck(f, tensors, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_with_dropout(mode):
    """The backward uses the forward's dropout masks (seeded per call)."""
    proj = PROJ_SIZE if mode == "LSTM" else 0
    x, h0, c0, params = _setup(mode, proj, num_layers=2)
    tensors = [x, h0] + ([c0] if mode == "LSTM" else []) + params
    tensors = [t.requires_grad_() for t in tensors]
    f = _function(mode, len(params), True, 2, 0.4, True, True, False, True, seed=5)
    # The masks really act: the result differs from the one without dropout.
    no_dropout = _function(mode, len(params), True, 2, 0.0, True, True, False, True)
    assert not torch.allclose(f(*tensors)[0], no_dropout(*tensors)[0])
    assert gradcheck(f, tensors, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_double_backward_raises(mode):
    proj = PROJ_SIZE if mode == "LSTM" else 0
    x, h0, c0, params = _setup(mode, proj)
    x.requires_grad_()
    f = _function(mode, len(params), True, 2, 0.0, True, True, False, True)
    tensors = [x, h0] + ([c0] if mode == "LSTM" else []) + params
    with pytest.raises(RuntimeError, match="double backward"):
        output = f(*tensors)[0]
        (grad_x,) = torch.autograd.grad(output.pow(2).sum(), x, create_graph=True)
        grad_x.sum().backward()
