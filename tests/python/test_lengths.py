"""Variable-length sequences: the ``lengths`` argument of the public operators.

``lengths`` (int64, shape (B), each in 1..T, any order) means what a
torch.nn ``PackedSequence`` means, without the packing: steps past a
sequence's end leave its state alone and output zeros, hy/cy hold the state
at the last valid step, the reverse direction starts at step length-1, and
padded input positions are ignored.

The reference is torch.nn on ``pack_padded_sequence(..., enforce_sorted=False)``
with the same weights: the operator runs on the torch.nn module's own flat
parameters, so both sides differentiate with respect to the same tensors.
"""

import warnings

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import deeprnn
from deeprnn_test_utils import MODES, OP_NAMES, classes, module_kwargs, op_args, public_op, \
    random_states

# Distinct small sizes, so that a number in an error message says which one it is.
SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 6, 5, 3, 4, 2

TOLERANCES = {
    # (forward, gradients)
    torch.float32: (dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-4, atol=1e-4)),
    torch.float64: (dict(rtol=1e-10, atol=1e-10), dict(rtol=1e-10, atol=1e-10)),
}


# ------------------------------------------------------------------ helpers


def _module(mode, dtype=torch.float64, num_layers=2, bidirectional=True, batch_first=False,
            bias=True, proj=0, dropout=0.0, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE):
    """A fresh torch.nn module (its weights are what both sides run on)."""
    torch_cls, _ = classes(mode)
    kwargs = module_kwargs(mode, input_size=input_size, hidden_size=hidden_size,
                           num_layers=num_layers, bias=bias, batch_first=batch_first,
                           bidirectional=bidirectional, dropout=dropout, proj_size=proj)
    return torch_cls(**kwargs, dtype=dtype)


def _input(module, seq_len=SEQ_LEN, batch=BATCH):
    dtype = module.weight_ih_l0.dtype
    shape = (batch, seq_len, module.input_size) if module.batch_first else \
        (seq_len, batch, module.input_size)
    return torch.randn(shape, dtype=dtype)


def _mode(module):
    if isinstance(module, torch.nn.LSTM):
        return "LSTM"
    if isinstance(module, torch.nn.GRU):
        return "GRU"
    return "RNN_TANH" if module.nonlinearity == "tanh" else "RNN_RELU"


def _states(module, batch=BATCH):
    return random_states(_mode(module), batch, module.num_layers, module.bidirectional,
                         module.hidden_size, getattr(module, "proj_size", 0),
                         module.weight_ih_l0.dtype)


def _lengths(seq_len, batch, kind="mixed"):
    """int64 lengths of ``kind``:

    mixed  1..T, holding T, 1 and a repeat (where the batch allows), not sorted
    short  1..T-2: the last two steps are padding for every sequence
    ones   all 1
    full   all T
    sorted like mixed, sorted descending
    """
    if kind == "ones":
        return torch.ones(batch, dtype=torch.int64)
    if kind == "full":
        return torch.full((batch,), seq_len, dtype=torch.int64)
    if kind == "short":
        assert seq_len >= 3
        values = torch.randint(1, seq_len - 1, (batch,))
        values[0] = seq_len - 2
        values = values[torch.randperm(batch)]
    else:
        values = torch.randint(1, seq_len + 1, (batch,))
        special = [seq_len, 1, None]
        for i, value in enumerate(special[:batch]):
            # The repeat copies the first value, whatever it became.
            values[i] = values[0] if value is None else value
        values = values[torch.randperm(batch)]
    if kind == "sorted":
        return values.sort(descending=True).values
    if batch >= 2 and bool((values[:-1] >= values[1:]).all()):
        values = values.flip(0)  # never accidentally sorted descending
    return values.to(torch.int64)


def _valid(lengths, seq_len, batch_first):
    """Boolean mask (T, B), or (B, T) with batch_first: the steps inside a sequence."""
    mask = torch.arange(seq_len).unsqueeze(1) < lengths.unsqueeze(0)
    return mask.t() if batch_first else mask


def _ours(module, x, h0, c0, lengths, dropout=0.0, train=True):
    """The public operator on the module's own flat parameters."""
    mode = _mode(module)
    args = op_args(mode, x, h0, c0, list(module._flat_weights), module.bias,
                   module.num_layers, dropout, train, module.bidirectional,
                   module.batch_first)
    return list(public_op(mode)(*args, lengths=lengths))


def _reference(module, x, h0, c0, lengths):
    """torch.nn on the packed input, unpacked to the padded layout (zeros past lengths)."""
    seq_len = x.shape[1] if module.batch_first else x.shape[0]
    packed = pack_padded_sequence(x, lengths, batch_first=module.batch_first,
                                  enforce_sorted=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LSTM with projections is not supported")
        if _mode(module) == "LSTM":
            output, (hy, cy) = module(packed, None if h0 is None else (h0, c0))
            states = [hy, cy]
        else:
            output, hy = module(packed, h0)
            states = [hy]
    output, _ = pad_packed_sequence(output, batch_first=module.batch_first,
                                    total_length=seq_len)
    return [output] + states


def _leaves(module, x, h0, c0):
    """(tensors, names) that take a gradient: input, states, then every parameter."""
    tensors, names = [x], ["input"]
    for name, t in (("h0", h0), ("c0", c0)):
        if t is not None:
            tensors.append(t)
            names.append(name)
    tensors += list(module._flat_weights)
    names += list(module._flat_weights_names)
    for t in tensors:
        t.requires_grad_()
    return tensors, names


def _grads(results, weights, leaves, used):
    chosen = [i for i in used if i < len(results)]
    return torch.autograd.grad([results[i] for i in chosen], leaves,
                               [weights[i] for i in chosen])


def _assert_close(got, expected, tol, what):
    assert got.shape == expected.shape, \
        f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(got, expected, **tol, msg=lambda m: f"{what}: {m}")


def _check_parity(module, x, h0, c0, lengths, used=(0, 1, 2)):
    """Forward and every gradient of the operator against torch.nn packed."""
    fwd_tol, grad_tol = TOLERANCES[x.dtype]
    leaves, names = _leaves(module, x, h0, c0)
    got = _ours(module, x, h0, c0, lengths)
    expected = _reference(module, x, h0, c0, lengths)
    assert len(got) == len(expected)
    for name, g, e in zip(["output", "hy", "cy"], got, expected):
        _assert_close(g, e, fwd_tol, name)
    seq_len = x.shape[1] if module.batch_first else x.shape[0]
    padding = ~_valid(lengths, seq_len, module.batch_first)
    assert torch.equal(got[0][padding], torch.zeros_like(got[0][padding])), \
        "output past a sequence's length is not exactly zero"

    weights = [torch.randn_like(r) for r in got]
    got_grads = _grads(got, weights, leaves, used)
    expected_grads = _grads(expected, weights, leaves, used)
    for name, g, e in zip(names, got_grads, expected_grads):
        _assert_close(g, e, grad_tol, f"grad of {name}")
    grad_x = got_grads[0]
    assert torch.equal(grad_x[padding], torch.zeros_like(grad_x[padding])), \
        "gradient of padded input positions is not exactly zero"


# ----------------------------------------------------- parity with torch.nn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["sf", "bf"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("mode", MODES)
def test_parity_with_packed_torch_nn(mode, num_layers, bidirectional, batch_first, dtype):
    torch.manual_seed(100)
    module = _module(mode, dtype, num_layers, bidirectional, batch_first)
    x = _input(module)
    h0, c0 = _states(module)
    _check_parity(module, x, h0, c0, _lengths(SEQ_LEN, BATCH))


# Each variant: (module keywords, with initial states, lengths kind, batch, results the loss reads).
VARIANTS = {
    "no_state": (dict(), False, "mixed", BATCH, (0, 1, 2)),
    "no_bias": (dict(bias=False), True, "mixed", BATCH, (0, 1, 2)),
    "short": (dict(), True, "short", BATCH, (0, 1, 2)),
    "short_no_state_bf": (dict(batch_first=True), False, "short", BATCH, (0, 1, 2)),
    "batch1": (dict(), True, "short", 1, (0, 1, 2)),
    "batch1_ones_bf": (dict(batch_first=True), True, "ones", 1, (0, 1, 2)),
    "all_ones": (dict(), True, "ones", BATCH, (0, 1, 2)),
    "sorted": (dict(), True, "sorted", BATCH, (0, 1, 2)),
    "loss_on_states": (dict(), True, "mixed", BATCH, (1, 2)),
    "loss_on_output": (dict(), True, "short", BATCH, (0,)),
    "three_layers_uni": (dict(num_layers=3, bidirectional=False), True, "mixed", BATCH,
                         (0, 1, 2)),
}
LSTM_VARIANTS = {
    "proj": (dict(proj=PROJ_SIZE), True, "mixed", BATCH, (0, 1, 2)),
    "proj_no_bias_no_state": (dict(proj=PROJ_SIZE, bias=False), False, "short", BATCH,
                              (0, 1, 2)),
    "proj_bf_uni": (dict(proj=PROJ_SIZE, batch_first=True, bidirectional=False), True,
                    "mixed", BATCH, (0, 1, 2)),
    "proj_loss_on_states": (dict(proj=PROJ_SIZE), True, "short", BATCH, (1, 2)),
    "proj_batch1_ones": (dict(proj=PROJ_SIZE), True, "ones", 1, (0, 1, 2)),
}


def _variant_cases():
    for mode in MODES:
        for name in VARIANTS:
            yield pytest.param(mode, name, id=f"{mode}-{name}")
    for name in LSTM_VARIANTS:
        yield pytest.param("LSTM", name, id=f"LSTM-{name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode, variant", list(_variant_cases()))
def test_parity_variants(mode, variant, dtype):
    kwargs, with_state, kind, batch, used = {**VARIANTS, **LSTM_VARIANTS}[variant]
    torch.manual_seed(200)
    module = _module(mode, dtype, **kwargs)
    x = _input(module, batch=batch)
    h0, c0 = _states(module, batch) if with_state else (None, None)
    _check_parity(module, x, h0, c0, _lengths(SEQ_LEN, batch, kind), used)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode, proj", [("LSTM", 0), ("LSTM", 7), ("GRU", 0), ("RNN_TANH", 0),
                                        ("RNN_RELU", 0)])
def test_parity_wide_batch(mode, proj, dtype):
    """A batch of 40 with a hidden size of 19: in float32 the recurrent GEMM
    takes MKL's packed path (batch >= 32) while the running rows shrink below
    32 step by step; the pointwise kernels split the rows over threads and
    run full vectors plus a tail. Lengths spread over 1..T, unsorted."""
    torch.manual_seed(202)
    batch, seq_len = 40, 7
    torch_cls, _ = classes(mode)
    kwargs = module_kwargs(mode, input_size=10, hidden_size=19, num_layers=2,
                           bidirectional=True, proj_size=proj)
    module = torch_cls(**kwargs, dtype=dtype)
    x = _input(module, seq_len=seq_len, batch=batch)
    h0, c0 = _states(module, batch)
    lengths = torch.arange(batch) % seq_len + 1
    lengths = lengths[torch.randperm(batch)]
    _check_parity(module, x, h0, c0, lengths)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode, proj", [("LSTM", 0), ("LSTM", 5), ("GRU", 0), ("RNN_TANH", 0)])
@pytest.mark.parametrize("steps_per_chunk", [1, 3])
def test_parity_with_chunked_backward(backward_chunk_bytes, mode, proj, dtype,
                                      steps_per_chunk):
    """The CPU's general backward loop a chunk of steps at a time (see
    test_parity.py): with lengths, the reverse direction reads h0 at each
    sequence's own last step, in whichever chunk holds it."""
    torch.manual_seed(303)
    batch, seq_len = 12, 11
    module = _module(mode, dtype, num_layers=2, bidirectional=True, proj=proj,
                     hidden_size=6)
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    backward_chunk_bytes(1 if steps_per_chunk == 1 else
                         steps_per_chunk * batch * 2 * gates * 6 * dtype.itemsize)
    x = _input(module, seq_len=seq_len, batch=batch)
    h0, c0 = _states(module, batch)
    _check_parity(module, x, h0, c0, _lengths(seq_len, batch))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode, proj", [("LSTM", 0), ("LSTM", 5), ("GRU", 0), ("RNN_TANH", 0)])
@pytest.mark.parametrize("path", ["fused", "general", "chunked"])
def test_parity_with_poisoned_buffers(poisoned_buffers, mode, proj, dtype, path):
    """Every buffer from the CPU's buffer cache arrives filled with NaNs (see
    test_parity.py): with lengths, the rows of finished sequences in the
    reserve and the chunk buffers must still never reach a result."""
    torch.manual_seed(404)
    batch, seq_len = 12, 11
    fused = torch.ops.deeprnn._cpu_fused_step(1 if path == "fused" else 0)
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    chunk = torch.ops.deeprnn._cpu_backward_chunk_bytes(
        3 * batch * 2 * gates * 6 * dtype.itemsize if path == "chunked" else 0)
    try:
        module = _module(mode, dtype, num_layers=2, bidirectional=True, proj=proj,
                         hidden_size=6)
        x = _input(module, seq_len=seq_len, batch=batch)
        h0, c0 = _states(module, batch)
        lengths = _lengths(seq_len, batch)
        layers_before = torch.ops.deeprnn._cpu_fused_step_layers()
        with torch.no_grad():
            got = _ours(module, x, h0, c0, lengths, train=False)
            expected = _reference(module, x, h0, c0, lengths)
            for name, g, e in zip(["output", "hy", "cy"], got, expected):
                _assert_close(g, e, TOLERANCES[dtype][0], f"inference {name}")
        _check_parity(module, x, h0, c0, lengths)
        ran_fused = torch.ops.deeprnn._cpu_fused_step_layers() != layers_before
        assert ran_fused == (path == "fused" and dtype == torch.float32)
    finally:
        torch.ops.deeprnn._cpu_fused_step(fused)
        torch.ops.deeprnn._cpu_backward_chunk_bytes(chunk)


def _norm_ratio(value, reference):
    value, reference = value.detach().double(), reference.detach().double()
    return ((value - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("mode", MODES)
def test_half_types_with_lengths(mode, dtype):
    """bfloat16/half against torch.nn packed in float64 on exactly the rounded
    weights and input: |ours - ref| / |ref| under 1e-2 for the results; for
    the gradients under twice torch.nn's own error in the same dtype (packed,
    same values), or 1e-2: on tensors this small (a bias has 12 elements)
    bfloat16 rounding alone reaches 1e-2 (torch.nn's own error measured
    0.009 to 0.016 here), and a rounding can flip a ReLU unit."""
    torch.manual_seed(203)
    proj = PROJ_SIZE if mode == "LSTM" else 0
    low = _module(mode, dtype, proj=proj, input_size=8)
    reference = _module(mode, torch.float64, proj=proj, input_size=8)
    reference.load_state_dict({k: v.double() for k, v in low.state_dict().items()})
    torch_low = _module(mode, dtype, proj=proj, input_size=8)
    torch_low.load_state_dict(low.state_dict())
    x = _input(low, batch=6)
    h0, c0 = _states(low, 6)
    lengths = _lengths(SEQ_LEN, 6)
    padding = ~_valid(lengths, SEQ_LEN, False)

    def leaves_of(module, convert):
        return _leaves(module, *[None if t is None else convert(t.detach()) for t in (x, h0, c0)])

    def run(run_fn, module, leaves):
        c = leaves[2] if mode == "LSTM" else None
        return run_fn(module, leaves[0], leaves[1], c, lengths)

    low_leaves, names = leaves_of(low, torch.clone)
    ref_leaves, _ = leaves_of(reference, torch.Tensor.double)
    torch_leaves, _ = leaves_of(torch_low, torch.clone)
    got = run(_ours, low, low_leaves)
    expected = run(_reference, reference, ref_leaves)
    torch_results = run(_reference, torch_low, torch_leaves)
    for name, g, e in zip(["output", "hy", "cy"], got, expected):
        assert g.dtype == dtype
        assert _norm_ratio(g, e) < 1e-2, name
    assert torch.equal(got[0][padding], torch.zeros_like(got[0][padding]))

    weights = [torch.randn_like(r).to(dtype) for r in expected]
    got_grads = _grads(got, weights, low_leaves, (0, 1, 2))
    expected_grads = _grads(expected, [w.double() for w in weights], ref_leaves, (0, 1, 2))
    torch_grads = _grads(torch_results, weights, torch_leaves, (0, 1, 2))
    bound = max(1e-2, 2 * max(_norm_ratio(t, e) for t, e in zip(torch_grads, expected_grads)))
    for name, g, e in zip(names, got_grads, expected_grads):
        assert g.dtype == dtype
        assert _norm_ratio(g, e) < bound, f"grad of {name}"
    assert torch.equal(got_grads[0][padding], torch.zeros_like(got_grads[0][padding]))


def test_parity_seq_len_one():
    """T = 1: every length is 1, the reverse direction starts at step 0."""
    torch.manual_seed(201)
    for mode in MODES:
        module = _module(mode, torch.float64, proj=PROJ_SIZE if mode == "LSTM" else 0)
        x = _input(module, seq_len=1)
        h0, c0 = _states(module)
        _check_parity(module, x, h0, c0, _lengths(1, BATCH, "ones"))


# ------------------------------------------------------------------- gradcheck


def _gradcheck_cases():
    for mode in MODES:
        yield pytest.param(mode, 0, False, id=f"{mode}")
    yield pytest.param("LSTM", PROJ_SIZE, False, id="LSTM-proj")
    yield pytest.param("GRU", 0, True, id="GRU-bf")
    yield pytest.param("LSTM", PROJ_SIZE, True, id="LSTM-proj-bf")


@pytest.mark.parametrize("mode, proj, batch_first", list(_gradcheck_cases()))
def test_gradcheck_with_lengths(mode, proj, batch_first):
    """float64 gradcheck, 2 layers, bidirectional, with h0 (and c0).

    T=4, lengths (3, 4, 1) (unsorted, one full, one of length 1) or, with
    batch_first, (2, 1, 3) (nothing reaches T: a trailing all-padding step).
    Hidden size 3 keeps the numerical Jacobian (two forwards per element of
    every input and parameter) small.
    """
    torch.manual_seed(300)
    seq_len, batch = 4, 3
    module = _module(mode, torch.float64, proj=proj, batch_first=batch_first,
                     input_size=2, hidden_size=3)
    x = _input(module, seq_len=seq_len, batch=batch)
    h0, c0 = _states(module, batch)
    lengths = torch.tensor([2, 1, 3] if batch_first else [3, 4, 1], dtype=torch.int64)
    params = [p.detach().clone() for p in module._flat_weights]
    tensors = [x, h0] + ([c0] if mode == "LSTM" else []) + params
    tensors = [t.requires_grad_() for t in tensors]
    has_c0 = mode == "LSTM"

    def f(*ts):
        c = ts[2] if has_c0 else None
        rest = list(ts[3:] if has_c0 else ts[2:])
        return public_op(mode)(*op_args(mode, ts[0], ts[1], c, rest, True, 2, 0.0, True,
                                        True, batch_first), lengths=lengths)

    assert gradcheck(f, tensors, eps=1e-6, atol=1e-6, rtol=1e-5)


# ----------------------------------------------- lengths == T: no lengths at all


@pytest.mark.parametrize("batch_first", [False, True], ids=["sf", "bf"])
@pytest.mark.parametrize("mode, proj", [("LSTM", 0), ("LSTM", PROJ_SIZE), ("GRU", 0),
                                        ("RNN_TANH", 0), ("RNN_RELU", 0)])
def test_full_lengths_equal_no_lengths_exactly(mode, proj, batch_first):
    torch.manual_seed(400)
    module = _module(mode, torch.float32, proj=proj, batch_first=batch_first)
    x = _input(module)
    h0, c0 = _states(module)
    leaves, names = _leaves(module, x, h0, c0)
    without = _ours(module, x, h0, c0, None)
    with_full = _ours(module, x, h0, c0, _lengths(SEQ_LEN, BATCH, "full"))
    for name, a, b in zip(["output", "hy", "cy"], with_full, without):
        assert torch.equal(a, b), f"{name} differs with lengths all T"
    weights = [torch.randn_like(r) for r in without]
    for name, a, b in zip(names, _grads(with_full, weights, leaves, (0, 1, 2)),
                          _grads(without, weights, leaves, (0, 1, 2))):
        assert torch.equal(a, b), f"grad of {name} differs with lengths all T"
    with torch.no_grad():  # the inference path (no reserve)
        without = _ours(module, x, h0, c0, None)
        with_full = _ours(module, x, h0, c0, _lengths(SEQ_LEN, BATCH, "full"))
    for name, a, b in zip(["output", "hy", "cy"], with_full, without):
        assert torch.equal(a, b), f"{name} differs with lengths all T under no_grad"


# ------------------------------------------------------- padding is ignored


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["sf", "bf"])
@pytest.mark.parametrize("mode, proj", [("LSTM", 0), ("LSTM", PROJ_SIZE), ("GRU", 0),
                                        ("RNN_TANH", 0), ("RNN_RELU", 0)])
def test_non_finite_padding_changes_nothing(mode, proj, batch_first, dtype):
    """NaN, inf and -inf in padded input positions: outputs, states and every
    gradient equal those of the clean run (the padding is never read, not
    even multiplied by a zero: 0 * NaN is NaN)."""
    torch.manual_seed(500)
    module = _module(mode, dtype, proj=proj, batch_first=batch_first)
    x = _input(module)
    h0, c0 = _states(module)
    lengths = _lengths(SEQ_LEN, BATCH, "short")
    lengths[lengths.argmin()] = 1  # a sequence that is nearly all padding
    padding = ~_valid(lengths, SEQ_LEN, batch_first)
    poison = torch.tensor([float("nan"), float("inf"), float("-inf")], dtype=dtype)
    poisoned = x.clone()
    count = int(padding.sum())
    poisoned[padding] = poison[torch.arange(count) % 3].unsqueeze(1).expand(count, x.shape[-1])
    assert not torch.isfinite(poisoned[padding]).any()

    def run(inp):
        leaves, names = _leaves(module, inp, h0, c0)
        results = _ours(module, inp, h0, c0, lengths)
        torch.manual_seed(501)
        weights = [torch.randn_like(r) for r in results]
        return results, _grads(results, weights, leaves, (0, 1, 2)), names

    clean, clean_grads, names = run(x)
    dirty, dirty_grads, _ = run(poisoned)
    for name, a, b in zip(["output", "hy", "cy"], dirty, clean):
        assert torch.equal(a, b), f"{name} changed when the padding holds NaN/inf"
    for name, a, b in zip(names, dirty_grads, clean_grads):
        assert torch.equal(a, b), f"grad of {name} changed when the padding holds NaN/inf"
    zeros = torch.zeros_like(clean[0][padding])
    assert torch.equal(clean[0][padding], zeros), "output past the lengths is not zero"
    assert torch.equal(dirty_grads[0][padding], torch.zeros_like(dirty_grads[0][padding])), \
        "gradient of padded input positions is not exactly zero"


def test_non_finite_padding_without_grad():
    """The inference path (no reserve, under no_grad) ignores the padding too."""
    torch.manual_seed(502)
    for mode in MODES:
        module = _module(mode, torch.float32, proj=PROJ_SIZE if mode == "LSTM" else 0)
        x = _input(module)
        h0, c0 = _states(module)
        lengths = _lengths(SEQ_LEN, BATCH, "short")
        padding = ~_valid(lengths, SEQ_LEN, False)
        poisoned = x.clone()
        poisoned[padding] = float("nan")
        with torch.no_grad():
            clean = _ours(module, x, h0, c0, lengths)
            dirty = _ours(module, poisoned, h0, c0, lengths)
            expected = _reference(module, x, h0, c0, lengths)
        for name, a, b, e in zip(["output", "hy", "cy"], dirty, clean, expected):
            assert torch.equal(a, b), f"{mode} {name} changed when the padding holds NaN"
            _assert_close(a, e, TOLERANCES[torch.float32][0], f"{mode} {name}")


# -------------------------------------------------- batch order, sortedness


@pytest.mark.parametrize("batch_first", [False, True], ids=["sf", "bf"])
@pytest.mark.parametrize("mode, proj", [("LSTM", 0), ("LSTM", PROJ_SIZE), ("GRU", 0),
                                        ("RNN_TANH", 0), ("RNN_RELU", 0)])
def test_batch_permutation_permutes_results(mode, proj, batch_first):
    """Sorted-descending lengths (no internal permutation) and two unsorted
    orders of the same batch give the same results, permuted."""
    torch.manual_seed(600)
    module = _module(mode, torch.float64, proj=proj, batch_first=batch_first)
    batch = 7
    x = _input(module, batch=batch)
    h0, c0 = _states(module, batch)
    lengths = _lengths(SEQ_LEN, batch, "sorted")
    assert bool((lengths[:-1] >= lengths[1:]).all())
    bdim = 0 if batch_first else 1
    weights = [torch.randn_like(r) for r in _ours(module, x, h0, c0, lengths)]

    def run(order):
        xs = x.index_select(bdim, order).detach()
        hs = h0.index_select(1, order).detach()
        cs = c0.index_select(1, order).detach() if c0 is not None else None
        leaves, names = _leaves(module, xs, hs, cs)
        results = _ours(module, xs, hs, cs, lengths[order])
        ws = [weights[0].index_select(bdim, order)] + [w.index_select(1, order)
                                                      for w in weights[1:]]
        return results, _grads(results, ws, leaves, (0, 1, 2)), names

    base, base_grads, names = run(torch.arange(batch))
    tol = dict(rtol=1e-12, atol=1e-12)
    for order in (torch.randperm(batch), torch.arange(batch).flip(0)):
        assert not bool((lengths[order][:-1] >= lengths[order][1:]).all())
        results, grads, _ = run(order)
        _assert_close(results[0], base[0].index_select(bdim, order), tol, "output")
        for name, r, b in zip(["hy", "cy"], results[1:], base[1:]):
            _assert_close(r, b.index_select(1, order), tol, name)
        permuted = {"input": bdim, "h0": 1, "c0": 1}
        for name, g, b in zip(names, grads, base_grads):
            expected = b.index_select(permuted[name], order) if name in permuted else b
            _assert_close(g, expected, tol, f"grad of {name}")


# ------------------------------------------------------ the lengths tensor


def test_lengths_positional_and_keyword_and_views():
    """lengths given positionally, by keyword, as a non-contiguous view, and
    as a 0-stride expand all give the same results."""
    torch.manual_seed(700)
    for mode in MODES:
        module = _module(mode, torch.float64)
        x = _input(module)
        h0, c0 = _states(module)
        lengths = _lengths(SEQ_LEN, BATCH)
        expected = _ours(module, x, h0, c0, lengths)
        args = op_args(mode, x, h0, c0, list(module._flat_weights), True, 2, 0.0, False,
                       True, False)
        positional = list(public_op(mode)(*args, lengths))
        strided = torch.stack([lengths, lengths + 100], 1)[:, 0]
        assert not strided.is_contiguous()
        viewed = _ours(module, x, h0, c0, strided)
        for a, b, c in zip(positional, viewed, expected):
            assert torch.equal(a, c) and torch.equal(b, c)
        same = torch.tensor([3], dtype=torch.int64).expand(BATCH)
        torch.testing.assert_close(_ours(module, x, h0, c0, same)[0],
                                   _ours(module, x, h0, c0, same.contiguous())[0],
                                   rtol=0, atol=0)


# ---------------------------------------------------------------- dropout


@pytest.mark.parametrize("mode", MODES)
def test_dropout_with_lengths_follows_the_seed(mode):
    torch.manual_seed(800)
    module = _module(mode, torch.float64, proj=PROJ_SIZE if mode == "LSTM" else 0)
    x = _input(module)
    h0, c0 = _states(module)
    lengths = _lengths(SEQ_LEN, BATCH, "short")
    padding = ~_valid(lengths, SEQ_LEN, False)
    leaves, names = _leaves(module, x, h0, c0)

    def run(seed):
        torch.manual_seed(seed)
        results = _ours(module, x, h0, c0, lengths, dropout=0.5, train=True)
        torch.manual_seed(801)
        weights = [torch.randn_like(r) for r in results]
        return results, _grads(results, weights, leaves, (0, 1, 2))

    first, first_grads = run(1)
    second, second_grads = run(1)
    other, _ = run(2)
    for a, b in zip(first + list(first_grads), second + list(second_grads)):
        assert torch.equal(a, b), "the same seed did not reproduce the run"
    assert not torch.allclose(first[0], other[0]), "dropout masks do not follow the seed"
    eval_output = _ours(module, x, h0, c0, lengths, dropout=0.5, train=False)[0]
    assert not torch.allclose(first[0], eval_output), "dropout changed nothing"
    assert torch.equal(first[0][padding], torch.zeros_like(first[0][padding]))
    assert torch.equal(first_grads[0][padding], torch.zeros_like(first_grads[0][padding]))
    for name, g in zip(names, first_grads):
        assert torch.isfinite(g).all(), f"grad of {name} is not finite"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
def test_dropout_one_with_lengths_matches_torch_nn(mode, dtype):
    """dropout=1 zeroes every layer output but the last exactly, without a
    random draw: torch.nn (packed, training) is then an exact reference for
    outputs, states and all gradients."""
    torch.manual_seed(810)
    module = _module(mode, dtype, proj=PROJ_SIZE if mode == "LSTM" else 0, dropout=1.0)
    module.train()
    x = _input(module)
    h0, c0 = _states(module)
    lengths = _lengths(SEQ_LEN, BATCH, "mixed")
    fwd_tol, grad_tol = TOLERANCES[dtype]
    leaves, names = _leaves(module, x, h0, c0)
    got = _ours(module, x, h0, c0, lengths, dropout=1.0, train=True)
    expected = _reference(module, x, h0, c0, lengths)
    for name, g, e in zip(["output", "hy", "cy"], got, expected):
        _assert_close(g, e, fwd_tol, name)
    weights = [torch.randn_like(r) for r in got]
    got_grads = _grads(got, weights, leaves, (0, 1, 2))
    for name, g, e in zip(names, got_grads, _grads(expected, weights, leaves, (0, 1, 2))):
        assert torch.isfinite(g).all(), f"grad of {name} is not finite"
        _assert_close(g, e, grad_tol, f"grad of {name}")
    # Layer 1 sees only zeros: its input weights get no gradient at all.
    for name, g in zip(names, got_grads):
        if name.startswith("weight_ih_l1"):
            assert torch.equal(g, torch.zeros_like(g)), name


# ------------------------------------------------------------ bad lengths


def _bad_cases():
    T, B = SEQ_LEN, BATCH

    def values(*v):
        return lambda: torch.tensor(v, dtype=torch.int64)

    # (id, lengths factory, regex after "deeprnn.<op>: lengths": expected ... got ...)
    return [
        ("zero", values(T, 2, 0, 1, 3), rf".*\b1\b.*\b{T}\b.*got.*\b0\b"),
        ("negative", values(T, -3, 2, 1, 3), rf".*\b1\b.*\b{T}\b.*got.*-3\b"),
        ("above_seq_len", values(T, 2, 9, 1, 3), rf".*\b1\b.*\b{T}\b.*got.*\b9\b"),
        ("int32", lambda: torch.full((B,), 2, dtype=torch.int32),
         r".*(int64|Long).*got.*\b(int32|Int)\b"),
        ("float32", lambda: torch.full((B,), 2.0),
         r".*(int64|Long).*got.*\b(float32|Float|float)\b"),
        ("float64_requires_grad", lambda: torch.full((B,), 2.0, dtype=torch.float64,
                                                     requires_grad=True),
         r".*(int64|Long).*got.*\b(float64|Double|double)\b"),
        ("bool", lambda: torch.ones(B, dtype=torch.bool), r".*(int64|Long).*got.*\b(bool|Bool)\b"),
        ("2d", lambda: torch.full((B, 1), 2, dtype=torch.int64),
         rf".*(1-D|\({B},?\)).*got.*(2-D|\({B}, 1\))"),
        ("0d", lambda: torch.tensor(2, dtype=torch.int64), rf".*(1-D|\({B},?\)).*got.*(0-D|\(\))"),
        ("batch_plus_one", lambda: torch.full((B + 1,), 2, dtype=torch.int64),
         rf".*\b{B}\b.*got.*\b{B + 1}\b"),
        ("batch_minus_one", lambda: torch.full((B - 1,), 2, dtype=torch.int64),
         rf".*\b{B}\b.*got.*\b{B - 1}\b"),
        ("meta_device", lambda: torch.full((B,), 2, dtype=torch.int64, device="meta"),
         r".*cpu.*got.*meta"),
    ]


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_lengths_through_the_op(mode, case):
    _, make, pattern = case
    torch.manual_seed(900)
    module = _module(mode, torch.float64)
    x = _input(module).requires_grad_()
    h0, c0 = _states(module)
    name = OP_NAMES[mode]
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: lengths{pattern}"):
        _ours(module, x, h0, c0, make())
    with torch.no_grad(), pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: lengths{pattern}"):
        _ours(module, x, h0, c0, make())
    # The operator keeps working afterwards.
    good = _lengths(SEQ_LEN, BATCH)
    _assert_close(_ours(module, x, h0, c0, good)[0], _reference(module, x, h0, c0, good)[0],
                  TOLERANCES[torch.float64][0], "output after an error")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [c for c in BAD_CASES if c[0] in
                                  ("zero", "above_seq_len", "int32", "2d", "batch_plus_one",
                                   "meta_device")],
                         ids=lambda c: c[0])
def test_bad_lengths_through_functional(mode, case):
    _, make, pattern = case
    torch.manual_seed(901)
    module = _module(mode, torch.float64, batch_first=True)
    x = _input(module)
    h0, c0 = _states(module)
    name = OP_NAMES[mode]
    fn = getattr(deeprnn.functional, name)
    states = (x, h0, c0) if mode == "LSTM" else (x, h0)
    with pytest.raises(RuntimeError, match=rf"^deeprnn\.{name}: lengths{pattern}"):
        fn(*states, list(module._flat_weights), True, 2, 0.0, False, True, True, lengths=make())


def test_functional_wrappers_take_lengths():
    """deeprnn.functional.* pass lengths through: the same bits as the op."""
    torch.manual_seed(902)
    for mode in MODES:
        module = _module(mode, torch.float64)
        x = _input(module)
        h0, c0 = _states(module)
        lengths = _lengths(SEQ_LEN, BATCH)
        fn = getattr(deeprnn.functional, OP_NAMES[mode])
        states = (x, h0, c0) if mode == "LSTM" else (x, h0)
        got = fn(*states, list(module._flat_weights), True, 2, 0.0, False, True, False,
                 lengths=lengths)
        expected = _ours(module, x, h0, c0, lengths, train=False)
        for a, b in zip(got, expected):
            assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_functional_wrappers_are_scriptable_with_lengths():
    scripted = torch.jit.script(deeprnn.functional.gru)
    torch.manual_seed(903)
    module = _module("GRU", torch.float64)
    x = _input(module)
    h0, _ = _states(module)
    lengths = _lengths(SEQ_LEN, BATCH)
    got = scripted(x, h0, list(module._flat_weights), True, 2, 0.0, False, True, False,
                   lengths)
    expected = _ours(module, x, h0, None, lengths, train=False)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


# ------------------------------------------------------------ empty batch


@pytest.mark.parametrize("batch_first", [False, True], ids=["sf", "bf"])
@pytest.mark.parametrize("mode", MODES)
def test_empty_batch_with_lengths(mode, batch_first):
    torch.manual_seed(1000)
    proj = PROJ_SIZE if mode == "LSTM" else 0
    module = _module(mode, torch.float64, proj=proj, batch_first=batch_first)
    x = _input(module, batch=0)
    h0, c0 = _states(module, 0)
    leaves, names = _leaves(module, x, h0, c0)
    lengths = torch.empty(0, dtype=torch.int64)
    results = _ours(module, x, h0, c0, lengths)
    out = proj or HIDDEN_SIZE
    expected_output = (0, SEQ_LEN, 2 * out) if batch_first else (SEQ_LEN, 0, 2 * out)
    assert results[0].shape == expected_output
    assert results[1].shape == (4, 0, out)
    if mode == "LSTM":
        assert results[2].shape == (4, 0, HIDDEN_SIZE)
    grads = _grads(results, [torch.randn_like(r) for r in results], leaves, (0, 1, 2))
    for name, g, leaf in zip(names, grads, leaves):
        assert g.shape == leaf.shape
        assert torch.equal(g, torch.zeros_like(g)), f"grad of {name} on an empty batch"
