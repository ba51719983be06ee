"""torch.library.opcheck on every deeprnn operator, and the private ops' numbers.

opcheck runs an operator several times (schema, autograd registration, fake
tensors, AOT dispatch), so dropout stays 0 here.
"""

import pytest
import torch

from deeprnn_test_utils import MODES, OP_NAMES, make_pair, op_args, public_op, random_states

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 4, 3, 5, 6, 4


def _parts(mode, proj, bias=True, batch_first=False, num_layers=2, bidirectional=True,
           dtype=torch.float64):
    torch.manual_seed(31)
    _, ours = make_pair(
        mode,
        dtype=dtype,
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
    x = torch.randn(shape, dtype=dtype)
    h0, c0 = random_states(mode, BATCH, num_layers, bidirectional, HIDDEN_SIZE, proj, dtype)
    return x, h0, c0, params


def _public_cases():
    for mode in MODES:
        for proj in ([0, PROJ_SIZE] if mode == "LSTM" else [0]):
            for batch_first, with_state, requires_grad in [
                (False, True, True),
                (True, False, True),
                (False, True, False),
            ]:
                yield pytest.param(
                    mode, proj, batch_first, with_state, requires_grad,
                    id=f"{mode}-proj{proj}-{'bf' if batch_first else 'sf'}"
                    f"-{'state' if with_state else 'nostate'}"
                    f"-{'grad' if requires_grad else 'nograd'}",
                )


@pytest.mark.parametrize("mode, proj, batch_first, with_state, requires_grad",
                         list(_public_cases()))
def test_opcheck_public_ops(mode, proj, batch_first, with_state, requires_grad):
    x, h0, c0, params = _parts(mode, proj, batch_first=batch_first)
    if not with_state:
        h0 = c0 = None
    if requires_grad:
        for t in [x, h0, c0] + params:
            if t is not None:
                t.requires_grad_()
    args = op_args(mode, x, h0, c0, params, True, 2, 0.0, True, True, batch_first)
    torch.library.opcheck(public_op(mode).default, args)


def _forward_args(mode, x, h0, c0, params, batch_first, need_reserve,
                  dropout=0.0, train=True):
    return (x, h0, c0 if mode == "LSTM" else None, params, True, 2, dropout, train,
            True, batch_first, OP_NAMES[mode], need_reserve)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("need_reserve", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_opcheck_rnn_forward(mode, need_reserve, batch_first):
    proj = PROJ_SIZE if mode == "LSTM" else 0
    x, h0, c0, params = _parts(mode, proj, batch_first=batch_first)
    args = _forward_args(mode, x, h0, c0, params, batch_first, need_reserve)
    torch.library.opcheck(torch.ops.deeprnn._rnn_forward.default, args)


def _backward_args(mode, proj, batch_first, output_mask, with_state=True, grads="all"):
    x, h0, c0, params = _parts(mode, proj, batch_first=batch_first)
    if not with_state:
        h0 = c0 = None
    output, hy, cy, reserve = torch.ops.deeprnn._rnn_forward(
        *_forward_args(mode, x, h0, c0, params, batch_first, True)
    )
    assert reserve.numel() > 0
    grad_output = torch.randn_like(output)
    grad_hy = torch.randn_like(hy) if grads == "all" else None
    grad_cy = torch.randn_like(cy) if (mode == "LSTM" and grads == "all") else None
    args = (
        x, h0, c0 if mode == "LSTM" else None, params, output, reserve,
        grad_output, grad_hy, grad_cy, True, 2, 0.0, True, True, batch_first,
        OP_NAMES[mode], output_mask,
    )
    return args


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "batch_first, output_mask",
    [(False, [True, True, True, True]), (True, [True, True, True, True]),
     (False, [True, False, False, False]), (False, [False, True, True, True])],
    ids=["all", "all-bf", "input", "states-params"],
)
def test_opcheck_rnn_backward(mode, batch_first, output_mask):
    proj = PROJ_SIZE if mode == "LSTM" else 0
    mask = list(output_mask)
    if mode != "LSTM":
        mask[2] = False
    args = _backward_args(mode, proj, batch_first, mask)
    torch.library.opcheck(torch.ops.deeprnn._rnn_backward.default, args)


@pytest.mark.parametrize("mode", MODES)
def test_opcheck_rnn_backward_partial_inputs(mode):
    """No initial state and no grad_hy/grad_cy: the optional arguments absent."""
    proj = PROJ_SIZE if mode == "LSTM" else 0
    args = _backward_args(mode, proj, False, [True, False, False, True],
                          with_state=False, grads="output")
    torch.library.opcheck(torch.ops.deeprnn._rnn_backward.default, args)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_private_ops_match_autograd(mode, batch_first):
    """_rnn_forward and _rnn_backward compute what the public op's autograd does."""
    proj = PROJ_SIZE if mode == "LSTM" else 0
    x, h0, c0, params = _parts(mode, proj, batch_first=batch_first)
    inputs = [x, h0] + ([c0] if mode == "LSTM" else []) + params
    leaves = [t.clone().requires_grad_() for t in inputs]
    lx, lh0 = leaves[0], leaves[1]
    lc0 = leaves[2] if mode == "LSTM" else None
    lparams = leaves[3:] if mode == "LSTM" else leaves[2:]
    results = public_op(mode)(*op_args(mode, lx, lh0, lc0, lparams, True, 2, 0.0, True,
                                       True, batch_first))
    grads = [torch.randn_like(r) for r in results]
    expected = torch.autograd.grad(results, leaves, grads)

    output, hy, cy, reserve = torch.ops.deeprnn._rnn_forward(
        *_forward_args(mode, x, h0, c0, params, batch_first, True)
    )
    torch.testing.assert_close(output, results[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hy, results[1], rtol=1e-12, atol=1e-12)
    if mode == "LSTM":
        torch.testing.assert_close(cy, results[2], rtol=1e-12, atol=1e-12)
    else:
        assert cy.shape == (0,)
    grad_input, grad_hx, grad_cx, grad_params = torch.ops.deeprnn._rnn_backward(
        x, h0, c0 if mode == "LSTM" else None, params, output, reserve,
        grads[0], grads[1], grads[2] if mode == "LSTM" else None,
        True, 2, 0.0, True, True, batch_first, OP_NAMES[mode],
        [True, True, mode == "LSTM", True],
    )
    got = [grad_input, grad_hx] + ([grad_cx] if mode == "LSTM" else []) + list(grad_params)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("with_dropout", [False, True])
def test_reserve_size_matches_reserve(mode, with_dropout):
    import deeprnn

    proj = PROJ_SIZE if mode == "LSTM" else 0
    x, h0, c0, params = _parts(mode, proj)
    dropout = 0.3 if with_dropout else 0.0
    _, _, _, reserve = torch.ops.deeprnn._rnn_forward(
        *_forward_args(mode, x, h0, c0, params, False, True, dropout=dropout)
    )
    size = deeprnn.functional.reserve_size(
        OP_NAMES[mode], SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, proj, 2, True,
        with_dropout,
    )
    assert isinstance(size, int) and size > 0
    assert reserve.numel() == size
    # Without a gradient to take there is no reserve.
    _, _, _, none = torch.ops.deeprnn._rnn_forward(
        *_forward_args(mode, x, h0, c0, params, False, False)
    )
    assert none.shape == (0,)


# ------------------------------------------------------ with lengths (int64 (B))


def _lengths(batch_first):
    # Unsorted (the internal permutation), one full sequence; batch_first:
    # none reaches SEQ_LEN (a trailing all-padding step). SEQ_LEN = 4, BATCH = 3.
    return torch.tensor([2, 1, 3] if batch_first else [3, 4, 1], dtype=torch.int64)


def _public_lengths_cases():
    for mode in MODES:
        for proj in ([0, PROJ_SIZE] if mode == "LSTM" else [0]):
            # opcheck is slow: two cases per op cover both layouts, with and
            # without states, the autograd and the plain path.
            for batch_first, with_state, requires_grad in [
                (False, True, True),
                (True, False, False),
            ]:
                yield pytest.param(
                    mode, proj, batch_first, with_state, requires_grad,
                    id=f"{mode}-proj{proj}-{'bf' if batch_first else 'sf'}"
                    f"-{'state' if with_state else 'nostate'}"
                    f"-{'grad' if requires_grad else 'nograd'}",
                )


@pytest.mark.parametrize("mode, proj, batch_first, with_state, requires_grad",
                         list(_public_lengths_cases()))
def test_opcheck_public_ops_with_lengths(mode, proj, batch_first, with_state, requires_grad):
    x, h0, c0, params = _parts(mode, proj, batch_first=batch_first)
    if not with_state:
        h0 = c0 = None
    if requires_grad:
        for t in [x, h0, c0] + params:
            if t is not None:
                t.requires_grad_()
    args = op_args(mode, x, h0, c0, params, True, 2, 0.0, True, True, batch_first)
    torch.library.opcheck(public_op(mode).default, args,
                          kwargs={"lengths": _lengths(batch_first)})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("need_reserve, batch_first", [(True, False), (False, True)])
def test_opcheck_rnn_forward_with_lengths(mode, need_reserve, batch_first):
    proj = PROJ_SIZE if mode == "LSTM" else 0
    x, h0, c0, params = _parts(mode, proj, batch_first=batch_first)
    args = _forward_args(mode, x, h0, c0, params, batch_first, need_reserve)
    torch.library.opcheck(torch.ops.deeprnn._rnn_forward.default, args,
                          kwargs={"lengths": _lengths(batch_first)})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "batch_first, output_mask",
    [(True, [True, True, True, True]), (False, [True, False, False, False])],
    ids=["all-bf", "input"],
)
def test_opcheck_rnn_backward_with_lengths(mode, batch_first, output_mask):
    proj = PROJ_SIZE if mode == "LSTM" else 0
    mask = list(output_mask)
    if mode != "LSTM":
        mask[2] = False
    lengths = _lengths(batch_first)
    x, h0, c0, params = _parts(mode, proj, batch_first=batch_first)
    output, hy, cy, reserve = torch.ops.deeprnn._rnn_forward(
        *_forward_args(mode, x, h0, c0, params, batch_first, True), lengths=lengths)
    args = (
        x, h0, c0 if mode == "LSTM" else None, params, output, reserve,
        torch.randn_like(output), torch.randn_like(hy),
        torch.randn_like(cy) if mode == "LSTM" else None, True, 2, 0.0, True, True,
        batch_first, OP_NAMES[mode], mask,
    )
    torch.library.opcheck(torch.ops.deeprnn._rnn_backward.default, args,
                          kwargs={"lengths": lengths})


@pytest.mark.parametrize("mode", MODES)
def test_private_ops_match_autograd_with_lengths(mode):
    """_rnn_forward and _rnn_backward with lengths compute what the public
    op's autograd does with them."""
    proj = PROJ_SIZE if mode == "LSTM" else 0
    lengths = _lengths(False)
    x, h0, c0, params = _parts(mode, proj)
    inputs = [x, h0] + ([c0] if mode == "LSTM" else []) + params
    leaves = [t.clone().requires_grad_() for t in inputs]
    lc0 = leaves[2] if mode == "LSTM" else None
    lparams = leaves[3:] if mode == "LSTM" else leaves[2:]
    results = public_op(mode)(*op_args(mode, leaves[0], leaves[1], lc0, lparams, True, 2, 0.0,
                                       True, True, False), lengths=lengths)
    grads = [torch.randn_like(r) for r in results]
    expected = torch.autograd.grad(results, leaves, grads)

    output, hy, cy, reserve = torch.ops.deeprnn._rnn_forward(
        *_forward_args(mode, x, h0, c0, params, False, True), lengths=lengths)
    torch.testing.assert_close(output, results[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hy, results[1], rtol=1e-12, atol=1e-12)
    if mode == "LSTM":
        torch.testing.assert_close(cy, results[2], rtol=1e-12, atol=1e-12)
    grad_input, grad_hx, grad_cx, grad_params = torch.ops.deeprnn._rnn_backward(
        x, h0, c0 if mode == "LSTM" else None, params, output, reserve,
        grads[0], grads[1], grads[2] if mode == "LSTM" else None,
        True, 2, 0.0, True, True, False, OP_NAMES[mode],
        [True, True, mode == "LSTM", True], lengths=lengths,
    )
    got = [grad_input, grad_hx] + ([grad_cx] if mode == "LSTM" else []) + list(grad_params)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
