"""Parity of deeprnn.RNN/GRU/LSTM with torch.nn under the same weights.

Outputs, final states and the gradients of input, h0, c0 and every parameter
are compared for every mode x layers {1, 2, 3} x {uni, bi} x batch_first x
bias x LSTM proj_size {0, 3} x initial state given or absent, in float32 and
float64; then unbatched input, and bfloat16 against a float64 reference.
"""

import itertools

import pytest
import torch

from deeprnn_test_utils import (
    MODES,
    call,
    make_pair,
    module_kwargs,
    norm_ratio,
    random_states,
)

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 5, 3, 4, 6, 3

TOLERANCES = {
    # (forward, gradients) as keyword arguments of assert_close
    torch.float64: (dict(rtol=1e-10, atol=1e-10), dict(rtol=1e-10, atol=1e-10)),
    torch.float32: (dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-4, atol=1e-5)),
}


def _cases():
    for mode, layers, bidirectional, batch_first, bias, proj, with_state, dtype in (
        itertools.product(
            MODES,
            [1, 2, 3],
            [False, True],
            [False, True],
            [True, False],
            [0, PROJ_SIZE],
            [True, False],
            [torch.float32, torch.float64],
        )
    ):
        if proj and mode != "LSTM":
            continue
        case_id = (
            f"{mode}-L{layers}-{'bi' if bidirectional else 'uni'}"
            f"-{'bf' if batch_first else 'sf'}-{'bias' if bias else 'nobias'}"
            f"-proj{proj}-{'state' if with_state else 'nostate'}"
            f"-{str(dtype).replace('torch.', '')}"
        )
        yield pytest.param(
            mode, layers, bidirectional, batch_first, bias, proj, with_state, dtype,
            id=case_id,
        )


def _compare(reference, ours, mode, x, h0, c0, dtype, tolerances=None):
    """Forward and backward through both; asserts everything matches."""
    forward_tol, grad_tol = tolerances or TOLERANCES[dtype]
    inputs_ref = [x.clone().requires_grad_()]
    inputs_our = [x.clone().requires_grad_()]
    for state in (h0, c0):
        if state is not None:
            inputs_ref.append(state.clone().requires_grad_())
            inputs_our.append(state.clone().requires_grad_())
    states_ref = inputs_ref[1:] + [None] * (3 - len(inputs_ref))
    states_our = inputs_our[1:] + [None] * (3 - len(inputs_our))

    results_ref = call(reference, mode, inputs_ref[0], states_ref[0], states_ref[1])
    results_our = call(ours, mode, inputs_our[0], states_our[0], states_our[1])
    names = ["output", "hy", "cy"]
    for name, got, expected in zip(names, results_our, results_ref):
        assert got.shape == expected.shape, name
        assert got.dtype == expected.dtype, name
        torch.testing.assert_close(got, expected, **forward_tol, msg=lambda m: f"{name}: {m}")

    # Random upstream gradients for every result.
    grads = [torch.randn_like(r) for r in results_ref]
    params_ref = [p for _, p in reference.named_parameters()]
    params_our = [p for _, p in ours.named_parameters()]
    param_names = [n for n, _ in reference.named_parameters()]
    assert param_names == [n for n, _ in ours.named_parameters()]
    got_grads = torch.autograd.grad(results_our, inputs_our + params_our, grads)
    expected_grads = torch.autograd.grad(results_ref, inputs_ref + params_ref, grads)
    grad_names = ["input", "h0", "c0"][: len(inputs_ref)] + param_names
    for name, got, expected in zip(grad_names, got_grads, expected_grads):
        torch.testing.assert_close(
            got, expected, **grad_tol, msg=lambda m: f"grad of {name}: {m}"
        )


@pytest.mark.parametrize(
    "mode, layers, bidirectional, batch_first, bias, proj, with_state, dtype",
    list(_cases()),
)
def test_parity_with_torch_nn(
    mode, layers, bidirectional, batch_first, bias, proj, with_state, dtype
):
    torch.manual_seed(1234)
    reference, ours = make_pair(
        mode,
        dtype=dtype,
        input_size=INPUT_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_layers=layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        proj_size=proj,
    )
    shape = (BATCH, SEQ_LEN, INPUT_SIZE) if batch_first else (SEQ_LEN, BATCH, INPUT_SIZE)
    x = torch.randn(shape, dtype=dtype)
    h0 = c0 = None
    if with_state:
        h0, c0 = random_states(mode, BATCH, layers, bidirectional, HIDDEN_SIZE, proj, dtype)
    _compare(reference, ours, mode, x, h0, c0, dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_unbatched_input(mode, batch_first, with_state):
    torch.manual_seed(99)
    proj = PROJ_SIZE if mode == "LSTM" else 0
    reference, ours = make_pair(
        mode,
        input_size=INPUT_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_layers=2,
        batch_first=batch_first,  # ignored for unbatched input, as in torch.nn
        bidirectional=True,
        proj_size=proj,
    )
    x = torch.randn(SEQ_LEN, INPUT_SIZE, dtype=torch.float64)
    h0 = c0 = None
    if with_state:
        h0, c0 = random_states(mode, 1, 2, True, HIDDEN_SIZE, proj, torch.float64)
        h0 = h0.squeeze(1)
        c0 = c0.squeeze(1) if c0 is not None else None
    _compare(reference, ours, mode, x, h0, c0, torch.float64)
    results = call(ours, mode, x, h0, c0)
    assert results[0].shape == (SEQ_LEN, 2 * (proj or HIDDEN_SIZE))
    assert results[1].shape == (4, proj or HIDDEN_SIZE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_against_float64_reference(mode, dtype):
    # Half types compute in float inside the cells and round on store.
    torch.manual_seed(7)
    proj = PROJ_SIZE if mode == "LSTM" else 0
    kwargs = dict(
        input_size=8, hidden_size=16, num_layers=2, bidirectional=True, proj_size=proj
    )
    reference, ours = make_pair(mode, dtype=torch.float64, **kwargs)
    ours = ours.to(dtype)
    # The reference uses exactly the bfloat16 weights and input, in float64.
    reference.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = torch.randn(7, 4, 8, dtype=dtype)
    h0, c0 = random_states(mode, 4, 2, True, 16, proj, dtype)

    x_our = x.clone().requires_grad_()
    x_ref = x.double().requires_grad_()
    results_our = call(ours, mode, x_our, h0, c0)
    results_ref = call(
        reference, mode, x_ref, h0.double(), c0.double() if c0 is not None else None
    )
    for name, got, expected in zip(["output", "hy", "cy"], results_our, results_ref):
        assert got.dtype == dtype
        assert norm_ratio(got, expected) < 1e-2, name

    grads = [torch.randn_like(r) for r in results_ref]
    params_our = list(ours.parameters())
    params_ref = list(reference.parameters())
    got = torch.autograd.grad(results_our, [x_our] + params_our, [g.to(dtype) for g in grads])
    expected = torch.autograd.grad(
        results_ref, [x_ref] + params_ref, [g.to(dtype).double() for g in grads]
    )
    names = ["input"] + [n for n, _ in ours.named_parameters()]
    # A low-precision rounding can move a ReLU pre-activation across zero,
    # which switches that unit's whole gradient on or off, so RNN_RELU's
    # gradient error depends on the draw and on rounding order: there it is
    # held to twice torch.nn's worst gradient error in the same dtype (or
    # 1e-2). Smooth cells stay < 1e-2.
    bounds = [1e-2] * len(names)
    if mode == "RNN_RELU":
        low_reference = torch.nn.RNN(
            **module_kwargs(mode, **kwargs), dtype=dtype)
        low_reference.load_state_dict(ours.state_dict())
        x_low = x.clone().requires_grad_()
        results_low = call(low_reference, mode, x_low, h0, c0)
        torch_got = torch.autograd.grad(
            results_low, [x_low] + list(low_reference.parameters()),
            [g.to(dtype) for g in grads])
        torch_worst = max(norm_ratio(t, e) for t, e in zip(torch_got, expected))
        bounds = [max(1e-2, 2 * torch_worst)] * len(names)
    for name, g, e, bound in zip(names, got, expected, bounds):
        assert g.dtype == dtype
        assert norm_ratio(g, e) < bound, f"grad of {name}"


# Shapes large enough that the CPU cell kernels split the batch across
# threads (a task holds at least 16384 gate elements, see cpu/cell_kernels.cpp)
# and, bidirectional, that the two directions run on separate threads: the
# small shapes above run every kernel on one thread.
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_with_torch_nn_on_threaded_shapes(mode, bidirectional, dtype):
    assert torch.get_num_threads() >= 2, (
        "this test checks the multi-threaded paths; run it with >= 2 threads")
    torch.manual_seed(4321)
    batch, hidden = 300, 64  # LSTM: 4 chunks, GRU: 3, RNN: 2
    proj = 24 if mode == "LSTM" else 0
    reference, ours = make_pair(
        mode, dtype=dtype, input_size=9, hidden_size=hidden, num_layers=2,
        bidirectional=bidirectional, proj_size=proj)
    x = torch.randn(3, batch, 9, dtype=dtype)
    h0, c0 = random_states(mode, batch, 2, bidirectional, hidden, proj, dtype)
    tolerances = None
    if dtype == torch.float32:
        # Weight gradients here sum 900 products in float32, with
        # cancellation; torch.nn and deeprnn round them differently.
        tolerances = (dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-3, atol=1e-4))
    _compare(reference, ours, mode, x, h0, c0, dtype, tolerances)


# Shapes that put every float32 GEMM of the CPU's general loop on the packed
# or vendor path (cpu/packed_gemm.h): the batch of 40 reaches the packed
# recurrent GEMM (32 rows and more), and the input projection (480 x 48 x
# 4H) and dx (480 x 4H x 48) are past oneDNN's thresholds (4 Mi
# multiply-adds, 32 columns). The fused loop, which would take batch 40
# where the GEMMs run through oneDNN, is switched off. test_packed_gemm.py
# runs this under each library (MKL, oneDNN, none).
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_parity_on_vendor_gemm_shapes(fused_step_off, mode, bidirectional, lengths):
    torch.manual_seed(2468)
    batch, hidden, seq_len, features = 40, 64, 12, 48
    reference, ours = make_pair(
        mode, dtype=torch.float32, input_size=features, hidden_size=hidden,
        num_layers=2, bidirectional=bidirectional)
    x = torch.randn(seq_len, batch, features)
    h0, c0 = random_states(mode, batch, 2, bidirectional, hidden, 0, torch.float32)
    if not lengths:
        # Weight gradients sum 480 products with cancellation (see above).
        _compare(reference, ours, mode, x, h0, c0, torch.float32,
                 (dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-3, atol=1e-4)))
        return
    steps = torch.randint(1, seq_len + 1, (batch,))
    x.requires_grad_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, steps, enforce_sorted=False)
    state = (h0, c0) if mode == "LSTM" else h0
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(
        reference(packed, state)[0], total_length=seq_len)
    got = ours(x, state, lengths=steps)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    weight = torch.randn_like(expected)
    params_ref = list(reference.parameters())
    grads_got = torch.autograd.grad((got * weight).sum(), [x] + list(ours.parameters()))
    grads_want = torch.autograd.grad((expected * weight).sum(), [x] + params_ref)
    for g, w in zip(grads_got, grads_want):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-4)


# The weight gradients through oneDNN (dW = dG^T X over T x B rows) go in
# blocks of about 12 MiB of rows of dG and X (cpu/packed_gemm.cpp): GRU with
# H = 64 and I = 100 takes 10,773 rows a block, so T x B = 12,000 makes two,
# the second partial, added to the first. Both directions: dG's rows are
# strided. (Under MKL, one GEMM.)
def test_parity_on_vendor_gemm_shapes_in_blocks(fused_step_off):
    torch.manual_seed(1357)
    reference, ours = make_pair(
        "GRU", dtype=torch.float32, input_size=100, hidden_size=64, num_layers=1,
        bidirectional=True)
    x = torch.randn(120, 100, 100)
    h0, _ = random_states("GRU", 100, 1, True, 64, 0, torch.float32)
    # Weight gradients sum 12,000 products with cancellation.
    _compare(reference, ours, "GRU", x, h0, None, torch.float32,
             (dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-3, atol=5e-4)))


# Inference (no gradient) takes its own path: no reserve, and the input
# projection done a chunk of steps at a time (about 1 MiB of gates per
# chunk). These shapes give several chunks and a partial last one, both
# directions.
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 300])
def test_inference_parity_with_torch_nn(mode, bidirectional, dtype, batch):
    torch.manual_seed(99)
    proj = 24 if mode == "LSTM" else 0
    reference, ours = make_pair(
        mode, dtype=dtype, input_size=9, hidden_size=64, num_layers=2,
        bidirectional=bidirectional, proj_size=proj)
    seq_len = 1500 if batch == 1 else 20
    x = torch.randn(seq_len, batch, 9, dtype=dtype)
    h0, c0 = random_states(mode, batch, 2, bidirectional, 64, proj, dtype)
    forward_tol, _ = TOLERANCES[dtype]
    with torch.no_grad():
        expected = call(reference, mode, x, h0, c0)
        got = call(ours, mode, x, h0, c0)
    for name, g, e in zip(["output", "hy", "cy"], got, expected):
        torch.testing.assert_close(g, e, **forward_tol, msg=lambda m: f"{name}: {m}")


# The CPU's general backward loop (the fused step off) keeps the gradients
# of the pre-activations for a chunk of steps (about 16 MiB) and turns each
# full chunk into its share of the weight gradients and dx. A budget of 1
# byte makes every step a chunk; `few` a few steps per chunk, with a partial
# last one, and, bidirectional, chunks of the two directions that cover
# different steps (dx summed across chunks, dW_hh's h0 term kept aside).
def _few_steps_bytes(mode, batch, directions, hidden, dtype):
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    return 3 * batch * directions * gates * hidden * dtype.itemsize


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", ["one", "few"])
def test_parity_with_chunked_backward(backward_chunk_bytes, mode, bidirectional, dtype,
                                      chunk):
    torch.manual_seed(808)
    batch, hidden, seq_len = 20, 16, 10
    proj = 7 if mode == "LSTM" else 0
    directions = 2 if bidirectional else 1
    backward_chunk_bytes(
        1 if chunk == "one"
        else _few_steps_bytes(mode, batch, directions, hidden, dtype))
    reference, ours = make_pair(
        mode, dtype=dtype, input_size=5, hidden_size=hidden, num_layers=2,
        bidirectional=bidirectional, proj_size=proj)
    x = torch.randn(seq_len, batch, 5, dtype=dtype)
    h0, c0 = random_states(mode, batch, 2, bidirectional, hidden, proj, dtype)
    _compare(reference, ours, mode, x, h0, c0, dtype)


def _poisoned_cases():
    for mode in MODES:
        for bidirectional in (False, True):
            for dtype, paths in ((torch.float32, ("fused", "general", "chunked")),
                                 (torch.float64, ("general", "chunked"))):
                for path in paths:  # float64 never takes the fused loop
                    yield pytest.param(
                        mode, bidirectional, dtype, path,
                        id=f"{mode}-{'bi' if bidirectional else 'uni'}-"
                           f"{str(dtype).replace('torch.', '')}-{path}")


@pytest.mark.parametrize("mode, bidirectional, dtype, path", list(_poisoned_cases()))
def test_parity_with_poisoned_buffers(poisoned_buffers, mode, bidirectional, dtype, path):
    """Every buffer the CPU kernels take from the buffer cache arrives filled
    with NaNs (as a reused block arrives with the last call's data): each
    loop (the fused step, the general loop, the general backward a few steps
    per chunk) in inference and training must match torch.nn as before."""
    torch.manual_seed(909)
    batch, hidden, seq_len = 12, 16, 10
    proj = 7 if mode == "LSTM" else 0
    directions = 2 if bidirectional else 1
    fused = torch.ops.deeprnn._cpu_fused_step(1 if path == "fused" else 0)
    chunk = torch.ops.deeprnn._cpu_backward_chunk_bytes(
        _few_steps_bytes(mode, batch, directions, hidden, dtype) if path == "chunked" else 0)
    try:
        reference, ours = make_pair(
            mode, dtype=dtype, input_size=5, hidden_size=hidden, num_layers=2,
            bidirectional=bidirectional, proj_size=proj)
        x = torch.randn(seq_len, batch, 5, dtype=dtype)
        h0, c0 = random_states(mode, batch, 2, bidirectional, hidden, proj, dtype)
        layers_before = torch.ops.deeprnn._cpu_fused_step_layers()
        with torch.no_grad():
            for got, expected in zip(call(ours, mode, x, h0, c0),
                                     call(reference, mode, x, h0, c0)):
                torch.testing.assert_close(got, expected, **TOLERANCES[dtype][0])
        _compare(reference, ours, mode, x, h0, c0, dtype)
        ran_fused = torch.ops.deeprnn._cpu_fused_step_layers() != layers_before
        assert ran_fused == (path == "fused")
    finally:
        torch.ops.deeprnn._cpu_fused_step(fused)
        torch.ops.deeprnn._cpu_backward_chunk_bytes(chunk)


def test_backward_chunk_bytes_rejects_a_negative_budget():
    with pytest.raises(RuntimeError, match=r"_cpu_backward_chunk_bytes: bytes must be"
                                           r" -1 .* got -2"):
        torch.ops.deeprnn._cpu_backward_chunk_bytes(-2)
