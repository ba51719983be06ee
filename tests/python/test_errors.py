"""Bad input fails with a clear message; odd but valid input works.

Each bad argument is tried through the operator (messages name the op and the
argument) and through the module, which checks its arguments exactly as
torch.nn does (same exception type and text as torch.nn for the same call);
the module must keep working afterwards.
"""

import pytest
import torch
from torch.nn import Parameter

import deeprnn
from deeprnn_test_utils import MODES, OP_NAMES, call, classes, make_pair, module_kwargs, \
    op_args, public_op, random_states

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 5, 3, 4, 6, 3


def _proj(mode):
    return PROJ_SIZE if mode == "LSTM" else 0


def _setup(mode, num_layers=2, bidirectional=True, batch_first=False):
    torch.manual_seed(11)
    reference, ours = make_pair(
        mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=num_layers,
        bidirectional=bidirectional, batch_first=batch_first, proj_size=_proj(mode),
    )
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    h0, c0 = random_states(mode, BATCH, num_layers, bidirectional, HIDDEN_SIZE,
                           _proj(mode), torch.float64)
    return reference, ours, x, h0, c0


def _op_call(mode, x, h0, c0, params, num_layers=2, dropout=0.0, bidirectional=True,
             has_biases=True):
    return public_op(mode)(*op_args(mode, x, h0, c0, params, has_biases, num_layers,
                                    dropout, True, bidirectional, False))


def _assert_still_works(reference, ours, mode, x, h0, c0):
    for got, expected in zip(call(ours, mode, x, h0, c0), call(reference, mode, x, h0, c0)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def _same_error_as_torch_nn(reference, ours, mode, *args):
    """Calls both modules with args; both must raise the same type and text."""
    with pytest.raises(Exception) as expected:
        call(reference, mode, *args)
    with pytest.raises(expected.type) as got:
        call(ours, mode, *args)
    assert str(got.value) == str(expected.value)
    return got.value


# ------------------------------------------------------------ through the op


@pytest.mark.parametrize("mode", MODES)
def test_op_wrong_input_rank(mode):
    _, ours, x, h0, c0 = _setup(mode)
    params = list(ours.parameters())
    name = OP_NAMES[mode]
    for bad in (x[0], x.unsqueeze(0)):
        with pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: .*3-D input.*{bad.dim()}-D"):
            _op_call(mode, bad, h0, c0, params)


@pytest.mark.parametrize("mode", MODES)
def test_op_input_size_mismatch(mode):
    _, ours, x, h0, c0 = _setup(mode)
    bad = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE + 3, dtype=torch.float64)
    with pytest.raises(RuntimeError,
                       match=rf"^deeprnn\.{OP_NAMES[mode]}: input\.size\(-1\).*input_size.*"
                             rf"{INPUT_SIZE}.*got {INPUT_SIZE + 3}"):
        _op_call(mode, bad, h0, c0, list(ours.parameters()))


@pytest.mark.parametrize("mode", MODES)
def test_op_hx_shape_mismatch(mode):
    _, ours, x, h0, c0 = _setup(mode)
    params = list(ours.parameters())
    for bad in (h0[:2], h0[:, :2], torch.randn(4, BATCH, 2 * HIDDEN_SIZE, dtype=torch.float64),
                h0[0]):
        with pytest.raises(RuntimeError, match=rf"^deeprnn\.{OP_NAMES[mode]}: hx .*shape"):
            _op_call(mode, x, bad, c0, params)


def test_op_cx_shape_mismatch():
    _, ours, x, h0, c0 = _setup("LSTM")
    params = list(ours.parameters())
    for bad in (c0[:2], c0[:, :1], c0[..., :PROJ_SIZE]):
        with pytest.raises(RuntimeError, match=r"^deeprnn\.lstm: cx .*shape"):
            _op_call("LSTM", x, h0, bad, params)


@pytest.mark.parametrize("mode", ["GRU", "RNN_TANH", "RNN_RELU"])
def test_private_op_rejects_cx_outside_lstm(mode):
    _, ours, x, h0, _ = _setup(mode)
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{OP_NAMES[mode]}: cx"):
        torch.ops.deeprnn._rnn_forward(x, h0, torch.randn_like(h0), list(ours.parameters()),
                                       True, 2, 0.0, False, True, False, OP_NAMES[mode], False)


@pytest.mark.parametrize("mode", MODES)
def test_op_wrong_number_of_parameters(mode):
    _, ours, x, h0, c0 = _setup(mode)
    params = list(ours.parameters())
    for bad in (params[:-1], params + [params[0]], []):
        with pytest.raises(RuntimeError,
                           match=rf"^deeprnn\.{OP_NAMES[mode]}: expected \d+ parameter "
                                 rf"tensors.*got {len(bad)}$"):
            _op_call(mode, x, h0, c0, bad)
    # Through the functional API as well.
    wrapper = getattr(deeprnn.functional, OP_NAMES[mode])
    states = (x, h0, c0) if mode == "LSTM" else (x, h0)
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{OP_NAMES[mode]}: expected \d+ "
                                           rf"parameter tensors.*got {len(params) - 1}$"):
        wrapper(*states, params[:-1], True, 2, 0.0, False, True, False)
    # The same list read with the wrong has_biases or num_layers.
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{OP_NAMES[mode]}: expected .*parameter"):
        _op_call(mode, x, h0, c0, params, has_biases=False)
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{OP_NAMES[mode]}: expected .*parameter"):
        _op_call(mode, x, h0, c0, params, num_layers=3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("index", [1, 2, 5])
def test_op_parameter_of_wrong_shape(mode, index):
    _, ours, x, h0, c0 = _setup(mode)
    names = ours._flat_weights_names
    params = list(ours._flat_weights)
    bad = params[index]
    params[index] = torch.randn(*bad.shape[:-1], bad.shape[-1] + 1, dtype=bad.dtype)
    with pytest.raises(RuntimeError,
                       match=rf"^deeprnn\.{OP_NAMES[mode]}: parameter {index} "
                             rf"\({names[index]}\) must have shape"):
        _op_call(mode, x, h0, c0, params)


@pytest.mark.parametrize("mode", MODES)
def test_op_dtype_mismatch(mode):
    _, ours, x, h0, c0 = _setup(mode)
    params = [p.detach() for p in ours.parameters()]
    name = OP_NAMES[mode]
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: .*dtype"):
        _op_call(mode, x.float(), h0, c0, params)  # input float, weights double
    mixed = list(params)
    mixed[3] = mixed[3].float()
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: .*dtype.*parameter 3"):
        _op_call(mode, x, h0, c0, mixed)
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: (.*hx.*dtype|.*dtype.*hx)"):
        _op_call(mode, x, h0.float(), c0, params)
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: .*floating point"):
        _op_call(mode, x.long(), h0, c0, params)


@pytest.mark.parametrize("mode", MODES)
def test_op_num_layers_and_dropout_out_of_range(mode):
    _, ours, x, h0, c0 = _setup(mode)
    params = list(ours.parameters())
    name = OP_NAMES[mode]
    for layers in (0, -1):
        with pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: num_layers must be >= 1, "
                                               rf"got {layers}"):
            _op_call(mode, x, h0, c0, params, num_layers=layers)
    for dropout in (-0.1, 1.5):
        with pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: dropout must be in "
                                               rf"\[0, 1\], got {dropout}"):
            _op_call(mode, x, h0, c0, params, dropout=dropout)


def test_op_projection_not_smaller_than_hidden():
    torch.manual_seed(12)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    H = HIDDEN_SIZE
    for P in (H, H + 2):
        params = [torch.randn(4 * H, INPUT_SIZE, dtype=torch.float64),
                  torch.randn(4 * H, P, dtype=torch.float64),
                  torch.randn(4 * H, dtype=torch.float64),
                  torch.randn(4 * H, dtype=torch.float64),
                  torch.randn(P, H, dtype=torch.float64)]
        with pytest.raises(RuntimeError, match=r"^deeprnn\.lstm: proj_size must be in "
                                               rf"\[1, hidden_size\).*got {P}"):
            torch.ops.deeprnn.lstm(x, None, None, params, True, 1, 0.0, False, False, False)


def test_op_unknown_mode():
    _, ours, x, h0, c0 = _setup("LSTM")
    with pytest.raises(RuntimeError, match=r"^deeprnn.*mode.*'sigmoid'"):
        torch.ops.deeprnn._rnn_forward(x, h0, c0, list(ours.parameters()), True, 2, 0.0,
                                       False, True, False, "sigmoid", False)


# -------------------------------------------------------- through the module


@pytest.mark.parametrize("mode", MODES)
def test_module_wrong_input_rank(mode):
    reference, ours, x, h0, c0 = _setup(mode)
    for bad in (x[0, 0], x.unsqueeze(0)):
        error = _same_error_as_torch_nn(reference, ours, mode, bad)
        assert isinstance(error, ValueError)
    _assert_still_works(reference, ours, mode, x, h0, c0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batched", [True, False])
def test_module_input_size_mismatch(mode, batched):
    reference, ours, x, h0, c0 = _setup(mode)
    bad = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE + 1, dtype=torch.float64)
    if not batched:
        bad = bad[:, 0]
    _same_error_as_torch_nn(reference, ours, mode, bad)
    _assert_still_works(reference, ours, mode, x, h0, c0)


@pytest.mark.parametrize("mode", MODES)
def test_module_hx_shape_mismatch(mode):
    reference, ours, x, h0, c0 = _setup(mode)
    for bad in (h0[:2], h0[:, :2], h0[0], h0[..., :2]):
        _same_error_as_torch_nn(reference, ours, mode, x, bad, c0)
    # Unbatched input with batched (3-D) states.
    _same_error_as_torch_nn(reference, ours, mode, x[:, 0], h0, c0)
    _assert_still_works(reference, ours, mode, x, h0, c0)


def test_module_cx_shape_mismatch():
    reference, ours, x, h0, c0 = _setup("LSTM")
    for bad in (c0[:2], c0[:, :2], c0[0], c0[..., :PROJ_SIZE]):
        _same_error_as_torch_nn(reference, ours, "LSTM", x, h0, bad)
    _assert_still_works(reference, ours, "LSTM", x, h0, c0)


@pytest.mark.parametrize("mode", MODES)
def test_module_dtype_mismatch(mode):
    reference, ours, x, h0, c0 = _setup(mode)
    error = _same_error_as_torch_nn(reference, ours, mode, x.float())
    assert isinstance(error, ValueError)
    _assert_still_works(reference, ours, mode, x, h0, c0)


@pytest.mark.parametrize("mode", MODES)
def test_module_parameter_of_wrong_shape(mode):
    reference, ours, x, h0, c0 = _setup(mode)
    good = ours.weight_hh_l1
    ours.weight_hh_l1 = Parameter(torch.randn(good.shape[0], good.shape[1] + 1,
                                              dtype=torch.float64))
    index = ours._flat_weights_names.index("weight_hh_l1")
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{OP_NAMES[mode]}: parameter {index} "
                                           r"\(weight_hh_l1\) must have shape"):
        call(ours, mode, x, h0, c0)
    ours.weight_hh_l1 = good
    _assert_still_works(reference, ours, mode, x, h0, c0)


@pytest.mark.parametrize("mode", MODES)
def test_module_constructor_errors_match_torch_nn(mode):
    torch_cls, our_cls = classes(mode)
    bad_kwargs = [
        dict(num_layers=0),
        dict(num_layers=-2),
        dict(dropout=-0.1),
        dict(dropout=1.5),
        dict(dropout=True),
        dict(dropout="0.5"),
        dict(hidden_size=0),
        dict(input_size=0),
        dict(bias=1),
        dict(batch_first=None),
        dict(input_size=4.0),
    ]
    if mode == "LSTM":
        bad_kwargs += [dict(proj_size=HIDDEN_SIZE), dict(proj_size=HIDDEN_SIZE + 1),
                       dict(proj_size=-1)]
    else:
        bad_kwargs += [dict(proj_size=2)]
    for bad in bad_kwargs:
        kwargs = module_kwargs(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE)
        kwargs.update(bad)
        with pytest.raises(Exception) as expected:
            torch_cls(**kwargs)
        with pytest.raises(expected.type) as got:
            our_cls(**kwargs)
        assert str(got.value) == str(expected.value), bad


def test_module_unknown_nonlinearity():
    for args, kwargs in [((INPUT_SIZE, HIDDEN_SIZE), dict(nonlinearity="sigmoid")),
                         ((INPUT_SIZE, HIDDEN_SIZE, 2, "gelu"), {})]:
        with pytest.raises(ValueError) as expected:
            torch.nn.RNN(*args, **kwargs)
        with pytest.raises(ValueError) as got:
            deeprnn.RNN(*args, **kwargs)
        assert str(got.value) == str(expected.value)
        assert "Unknown nonlinearity" in str(got.value)


# ------------------------------------------------- odd but valid arguments


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_contiguous_input_and_weights(mode, dtype):
    torch.manual_seed(13)
    reference, ours = make_pair(mode, dtype=dtype, input_size=INPUT_SIZE,
                                hidden_size=HIDDEN_SIZE, num_layers=2, bidirectional=True,
                                proj_size=_proj(mode))
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=dtype)
    h0, c0 = random_states(mode, BATCH, 2, True, HIDDEN_SIZE, _proj(mode), dtype)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)

    # Transposed input: (B, T, I) storage seen as (T, B, I).
    x_t = x.transpose(0, 1).contiguous().transpose(0, 1)
    # Sliced input: every second feature of a wider tensor.
    wide = torch.randn(SEQ_LEN, BATCH, 2 * INPUT_SIZE, dtype=dtype)
    wide[..., ::2] = x
    x_s = wide[..., ::2]
    # States with a transposed layout.
    h0_t = h0.transpose(0, 1).contiguous().transpose(0, 1)
    c0_t = c0.transpose(0, 1).contiguous().transpose(0, 1) if c0 is not None else None
    assert not x_t.is_contiguous() and not x_s.is_contiguous() and not h0_t.is_contiguous()

    def noncontiguous(t):
        if t.dim() == 2:
            return t.t().contiguous().t()  # column-major matrix
        return torch.stack([t, t], dim=1)[:, 0]  # stride 2 vector

    params = [p.detach() for p in ours._flat_weights]
    odd_params = [noncontiguous(p) for p in params]
    assert all(not p.is_contiguous() for p in odd_params)
    expected = call(reference, mode, x, h0, c0)
    for xi in (x_t, x_s):
        got = _op_call(mode, xi, h0_t, c0_t, odd_params)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, **tol)

    # Through the module, with gradients.
    for name, p in zip(ours._flat_weights_names, params):
        setattr(ours, name, Parameter(noncontiguous(p.clone())))
    assert not ours.weight_ih_l0.is_contiguous()
    xs = x_s.detach().requires_grad_()
    got = call(ours, mode, xs, h0_t, c0_t)
    xr = x.clone().requires_grad_()
    want = call(reference, mode, xr, h0, c0)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, **tol)
    upstream = [torch.randn_like(e) for e in want]
    grads = torch.autograd.grad(got, [xs] + list(ours.parameters()), upstream)
    ref_grads = torch.autograd.grad(want, [xr] + list(reference.parameters()), upstream)
    grad_tol = tol if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for g, e in zip(grads, ref_grads):
        torch.testing.assert_close(g, e, **grad_tol)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_batch_of_size_zero_behaves_like_torch_nn(mode, batch_first, with_state):
    torch.manual_seed(14)
    reference, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE,
                                num_layers=2, bidirectional=True, batch_first=batch_first,
                                proj_size=_proj(mode))
    shape = (0, SEQ_LEN, INPUT_SIZE) if batch_first else (SEQ_LEN, 0, INPUT_SIZE)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    h0 = c0 = None
    if with_state:
        h0, c0 = random_states(mode, 0, 2, True, HIDDEN_SIZE, _proj(mode), torch.float64)

    def run(module):
        results = call(module, mode, x, h0, c0)
        grads = torch.autograd.grad(sum(r.sum() for r in results),
                                    [x] + list(module.parameters()), allow_unused=True)
        return results, grads

    try:
        expected = run(reference)
    except Exception as error:  # torch.nn refuses: so must we
        with pytest.raises(type(error)):
            run(ours)
        return
    got = run(ours)
    for g, e in zip(got[0], expected[0]):
        assert g.shape == e.shape
        assert g.dtype == e.dtype
    for g, e in zip(got[1], expected[1]):
        if e is None:
            continue
        assert g is not None and g.shape == e.shape
        torch.testing.assert_close(g, torch.zeros_like(g))
