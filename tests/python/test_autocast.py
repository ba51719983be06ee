"""deeprnn's operators and modules under torch.autocast.

Under autocast the operators cast input, states and parameters to the
autocast dtype (float64 tensors excepted) and run there; their results have
the dtypes torch.nn's RNNs give under the same autocast (see
csrc/autocast/rnn_autocast.cpp), their values are within low-precision
rounding of a float64 reference, and gradients reach the float32 parameters
in float32.
"""

import pytest
import torch

from deeprnn_test_utils import (
    call,
    classes,
    cuda_skip_reason,
    make_pair,
    module_kwargs,
    norm_ratio,
    op_args,
    public_op,
    random_states,
)

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE, LAYERS = 6, 4, 5, 8, 3, 2
LOW = torch.bfloat16

# Every (mode, proj_size) the modules support; LSTM with and without projection.
MODE_CASES = [("LSTM", 0), ("LSTM", PROJ_SIZE), ("GRU", 0), ("RNN_TANH", 0), ("RNN_RELU", 0)]
MODE_IDS = ["LSTM", "LSTM-proj", "GRU", "RNN_TANH", "RNN_RELU"]


def onednn_lstm_enabled():
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def expected_cpu_dtypes(mode, proj, low, state_dtype):
    """What torch.nn returns under torch.autocast("cpu", low) for float32
    input: (output, hy[, cy]) dtypes; ``state_dtype`` is the dtype of the
    given h0/c0 (float32 when absent: torch.nn then uses zeros like input).

    LSTM without projection runs oneDNN's mkldnn_rnn_layer, which autocast
    casts whole (all low precision); everything else goes cell by cell, where
    GRU's h and LSTM's c keep the dtype of the state they are updated from.
    """
    carried = torch.promote_types(low, state_dtype)
    if mode == "LSTM":
        if proj:
            return [low, low, carried]
        if onednn_lstm_enabled():
            return [low, low, low]
        return [carried, carried, carried]
    if mode == "GRU":
        return [carried, carried]
    return [low, low]


def _kwargs(mode, proj, **extra):
    return dict(
        input_size=INPUT_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_layers=LAYERS,
        bidirectional=True,
        proj_size=proj,
        **extra,
    )


def _grads(results, inputs, grad_outputs):
    """Gradients of sum(result * grad_output) w.r.t. inputs (None-free)."""
    loss = sum((r.double() * g).sum() for r, g in zip(results, grad_outputs))
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("mode,proj", MODE_CASES, ids=MODE_IDS)
@pytest.mark.parametrize("state", ["none", "float32", "low"])
def test_module_under_cpu_autocast_matches_torch_nn(mode, proj, state):
    torch.manual_seed(11)
    kwargs = _kwargs(mode, proj)
    torch_nn, ours = make_pair(mode, dtype=torch.float32, **kwargs)
    # float64 reference with exactly the float32 weights.
    reference = classes(mode)[0](**module_kwargs(mode, **kwargs), dtype=torch.float64)
    reference.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})

    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE)
    state_dtype = LOW if state == "low" else torch.float32
    h0 = c0 = None
    if state != "none":
        h0, c0 = random_states(mode, BATCH, LAYERS, True, HIDDEN_SIZE, proj, state_dtype)
    x_ours = x.clone().requires_grad_()
    x_torch = x.clone().requires_grad_()
    x_ref = x.double().requires_grad_()

    with torch.autocast("cpu", dtype=LOW):
        results_ours = call(ours, mode, x_ours, h0, c0)
        results_torch = call(torch_nn, mode, x_torch, h0, c0)
    results_ref = call(
        reference,
        mode,
        x_ref,
        None if h0 is None else h0.double(),
        None if c0 is None else c0.double(),
    )

    names = ["output", "hy", "cy"]
    expected = expected_cpu_dtypes(mode, proj, LOW, state_dtype)
    assert [r.dtype for r in results_ours] == expected
    assert [r.dtype for r in results_torch] == expected, "torch.nn changed its dtypes"
    for name, got, ref in zip(names, results_ours, results_ref):
        # bfloat16 keeps 8 significant bits (rounding 2^-9 = 2e-3 relative).
        assert norm_ratio(got, ref) < 1e-2, name

    # Backward: gradients reach the float32 leaves in float32.
    grad_outputs = [torch.randn_like(r) for r in results_ref]
    params_ours = list(ours.parameters())
    got = _grads(results_ours, [x_ours] + params_ours, grad_outputs)
    expected_grads = _grads(
        results_ref, [x_ref] + list(reference.parameters()), grad_outputs
    )
    # Backward rounds to bfloat16 the weights and activations it reads and the
    # gradient it carries from step to step, so a few roundings of 2^-9 add up
    # through the layers and steps: norm-ratio errors of 5e-3 to 1e-2 here
    # (torch.nn's own under autocast reach 1.4e-2). 2e-2 leaves room and still
    # catches a wrong or lost gradient (O(1)). RNN_RELU is left out: one
    # rounding that moves a pre-activation across zero switches that unit's
    # gradient on or off, and at this size torch.nn's own autocast gradients
    # then miss the float64 ones by up to 0.7 (on about half the draws, as
    # ours do). test_autocast_gradients_are_the_low_precision_gradients checks
    # every mode's autocast gradients exactly instead.
    grad_names = ["input"] + [n for n, _ in ours.named_parameters()]
    for name, g, e in zip(grad_names, got, expected_grads):
        assert g.dtype == torch.float32, name
        if mode != "RNN_RELU":
            assert norm_ratio(g, e) < 2e-2, f"grad of {name}"


def _op_inputs(mode, proj, dtype, has_biases, batch_first, with_states):
    torch.manual_seed(5)
    _, module = make_pair(mode, dtype=dtype, **_kwargs(mode, proj, bias=has_biases))
    params = list(module._flat_weights)
    shape = (BATCH, SEQ_LEN, INPUT_SIZE) if batch_first else (SEQ_LEN, BATCH, INPUT_SIZE)
    x = torch.randn(shape, dtype=dtype)
    h0 = c0 = None
    if with_states:
        h0, c0 = random_states(mode, BATCH, LAYERS, True, HIDDEN_SIZE, proj, dtype)
    return x, h0, c0, params


@pytest.mark.parametrize("mode,proj", MODE_CASES, ids=MODE_IDS)
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "has_biases,batch_first,with_states",
    [(True, False, False), (False, True, True)],
    ids=["bias", "nobias-batch_first-states"],
)
def test_op_under_autocast_is_cast_then_call(
    mode, proj, low, has_biases, batch_first, with_states
):
    # Autocast of the op is exactly: cast every floating argument to the
    # autocast dtype, call the op, give results torch.nn's dtypes.
    x, h0, c0, params = _op_inputs(
        mode, proj, torch.float32, has_biases, batch_first, with_states
    )

    def run(x, h0, c0, params):
        return public_op(mode)(
            *op_args(mode, x, h0, c0, params, has_biases, LAYERS, 0.0, False, True,
                     batch_first)
        )

    with torch.autocast("cpu", dtype=low):
        got = run(x, h0, c0, params)
    def cast(t):
        return None if t is None else t.to(low)

    expected = run(cast(x), cast(h0), cast(c0), [p.to(low) for p in params])
    dtypes = expected_cpu_dtypes(mode, proj, low, torch.float32)
    assert [g.dtype for g in got] == dtypes
    for g, e, dtype in zip(got, expected, dtypes):
        assert e.dtype == low
        assert torch.equal(g, e.to(dtype))


@pytest.mark.parametrize("mode,proj", MODE_CASES, ids=MODE_IDS)
def test_autocast_gradients_are_the_low_precision_gradients(mode, proj):
    # The casts are differentiable: each float32 leaf (input, states,
    # parameters) receives exactly the gradient of its low-precision copy,
    # converted to float32.
    x, h0, c0, params = _op_inputs(mode, proj, torch.float32, True, False, True)
    states = [h0] if c0 is None else [h0, c0]

    def run(leaves):
        x, *rest = leaves
        hx, cx = (rest[: len(states)] + [None])[:2]
        params = rest[len(states):]
        return public_op(mode)(
            *op_args(mode, x, hx, cx, params, True, LAYERS, 0.0, True, True, False)
        )

    leaves = [t.detach().clone().requires_grad_() for t in [x] + states + params]
    with torch.autocast("cpu", dtype=LOW):
        results = run(leaves)
    # Values a bfloat16 holds exactly, so that no path rounds them twice.
    grad_outputs = [torch.randn(r.shape).to(LOW).double() for r in results]
    got = _grads(results, leaves, grad_outputs)

    low_leaves = [t.detach().to(LOW).requires_grad_() for t in leaves]
    expected = _grads(run(low_leaves), low_leaves, grad_outputs)
    for g, e in zip(got, expected):
        assert g.dtype == torch.float32 and e.dtype == LOW
        assert torch.equal(g, e.float())


@pytest.mark.parametrize("mode,proj", MODE_CASES, ids=MODE_IDS)
def test_float64_is_not_cast_under_autocast(mode, proj):
    torch.manual_seed(3)
    _, ours = make_pair(mode, dtype=torch.float64, **_kwargs(mode, proj))
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    h0, c0 = random_states(mode, BATCH, LAYERS, True, HIDDEN_SIZE, proj, torch.float64)
    params = list(ours.parameters())
    grad_outputs = None

    def run():
        nonlocal grad_outputs
        x_leaf = x.clone().requires_grad_()
        results = call(ours, mode, x_leaf, h0, c0)
        if grad_outputs is None:
            grad_outputs = [torch.randn_like(r) for r in results]
        return results, _grads(results, [x_leaf] + params, grad_outputs)

    plain, plain_grads = run()
    with torch.autocast("cpu", dtype=LOW):
        autocast, autocast_grads = run()
    for p, a in zip(plain + list(plain_grads), autocast + list(autocast_grads)):
        assert a.dtype == torch.float64
        assert torch.equal(p, a)


@pytest.mark.parametrize("mode,proj", MODE_CASES, ids=MODE_IDS)
def test_outside_autocast_nothing_changes(mode, proj):
    torch.manual_seed(9)
    _, ours = make_pair(mode, dtype=torch.float32, **_kwargs(mode, proj))
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE)
    before = call(ours, mode, x)
    with torch.autocast("cpu", dtype=LOW):
        inside = call(ours, mode, x)
    with torch.autocast("cpu", dtype=LOW, enabled=False):
        disabled = call(ours, mode, x)
    after = call(ours, mode, x)
    for b, d, a, i in zip(before, disabled, after, inside):
        assert b.dtype == d.dtype == a.dtype == torch.float32
        assert torch.equal(b, d) and torch.equal(b, a)
        # The autocast result really was computed in low precision.
        assert not torch.equal(b, i.float())


def test_autocast_kernels_registered_for_cpu_and_cuda():
    # The AutocastCUDA kernels are compiled into every build; they only run
    # for CUDA tensors, which test_cuda_autocast covers on a GPU.
    for op in ["lstm", "gru", "rnn_tanh", "rnn_relu"]:
        for key in ["AutocastCPU", "AutocastCUDA"]:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"deeprnn::{op}", key), (
                op,
                key,
            )


@pytest.mark.parametrize("mode,proj", MODE_CASES, ids=MODE_IDS)
@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
def test_cuda_autocast(mode, proj, low):
    reason = cuda_skip_reason()
    if reason:
        pytest.skip(reason)
    torch.manual_seed(13)
    kwargs = _kwargs(mode, proj)
    torch_nn, ours = make_pair(mode, dtype=torch.float32, **kwargs)
    torch_nn, ours = torch_nn.cuda(), ours.cuda()
    reference = classes(mode)[0](**module_kwargs(mode, **kwargs), dtype=torch.float64)
    reference.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    reference = reference.cuda()
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, device="cuda")
    h0, c0 = random_states(mode, BATCH, LAYERS, True, HIDDEN_SIZE, proj, torch.float32)
    h0 = h0.cuda()
    c0 = None if c0 is None else c0.cuda()
    x_ours = x.clone().requires_grad_()
    with torch.autocast("cuda", dtype=low):
        results_ours = call(ours, mode, x_ours, h0, c0)
        results_torch = call(torch_nn, mode, x, h0, c0)
    results_ref = call(
        reference, mode, x.double(), h0.double(), None if c0 is None else c0.double()
    )
    assert [r.dtype for r in results_ours] == [r.dtype for r in results_torch]
    if torch.backends.cudnn.enabled:
        # torch.nn runs cuDNN's _cudnn_rnn, which autocast casts whole.
        assert all(r.dtype == low for r in results_ours)
    for got, ref in zip(results_ours, results_ref):
        assert norm_ratio(got, ref) < 1e-2
    grad_outputs = [torch.randn_like(r) for r in results_ref]
    grads = _grads(results_ours, [x_ours] + list(ours.parameters()), grad_outputs)
    assert all(g.dtype == torch.float32 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)
