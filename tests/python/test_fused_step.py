"""The CPU's fused small-batch step (cpu/rnn_cpu.cpp, forward_steps_fused and
backward_steps_fused).

float32 layers with batch <= 16 (where the general loop's GEMMs run through
MKL, i.e. on Intel CPUs; <= 256 where they run through oneDNN, see
cpu/packed_gemm.h), with or without lengths and LSTM projections, run their
time loop in one parallel region: each thread owns a
slice of the hidden units (W_hh's rows packed in its cache) and the threads
meet at a barrier per step (a second one with a projection; backward: the
cell backward on the thread's units, a barrier, then its columns of
dG_h W_hh). Every other layer takes the general loop. These tests run both
loops on the same shapes, with one, two and three threads (as many as there
are processors), against torch.nn (same weights), and check which loop ran
with the private layer counter ``torch.ops.deeprnn._cpu_fused_step_layers``.
The shapes cover a split of the units into 16-unit blocks that is even and
uneven, hidden and projection sizes that are not a multiple of 16 (the
kernel's scalar columns), a team of one (too little work to share), and
inference sequences longer than one projection chunk in both directions;
each with and without variable lengths (one sequence of length T, one of
length 1, the rest random), against torch.nn's packed path.
"""

import zlib

import pytest
import torch

from deeprnn_test_utils import make_pair, python_with_variable

# (mode, T, B, input_size, hidden_size, num_layers, bidirectional, proj_size)
# A team of two needs 2 x 32768 multiply-adds per step (D * B * G * H * P):
# all but the one-thread shape have that, so that their unit split runs
# wherever there are two processors. Every layer has T x B >= its packed
# bytes / 64 KiB and at most 8 MiB of them, so the fused loop takes it
# (fused_step_applies).
CONFIGS = [
    ("LSTM", 32, 1, 10, 256, 2, False, 0),  # 128 units per thread
    ("LSTM", 5, 16, 12, 48, 1, True, 0),  # 3 blocks of 16 over 2 threads
    ("LSTM", 4, 1, 3, 5, 1, False, 0),  # one thread, columns < 16
    ("LSTM", 40, 16, 8, 256, 1, True, 0),  # inference: 16 steps per chunk
    # Projections: the P outputs split like the units (a second barrier).
    ("LSTM", 6, 8, 7, 128, 2, True, 48),
    ("LSTM", 5, 2, 4, 256, 1, False, 72),  # 72 outputs: 4 blocks + 8
    ("GRU", 6, 16, 9, 37, 2, True, 0),  # 37 units: 2 blocks + 5 columns
    ("GRU", 23, 16, 8, 512, 1, True, 0),  # inference: 10 steps per chunk
    ("RNN_TANH", 9, 16, 5, 100, 3, False, 0),  # 6 blocks + 4 columns
    ("RNN_RELU", 8, 8, 6, 160, 2, True, 0),
    # Batches the fused loop takes only where MAX_BATCH is 256 (the general
    # loop's elsewhere: both loops run and are checked either way).
    ("LSTM", 10, 40, 16, 64, 1, True, 0),
    ("GRU", 8, 100, 12, 48, 2, False, 0),
    ("RNN_TANH", 6, 256, 8, 32, 1, False, 0),
]

# The fused loop's batch limit (cpu/rnn_cpu.cpp, fused_max_batch).
MAX_BATCH = 256 if torch.ops.deeprnn._cpu_packed_gemm_library() == "onednn" else 16


def _fused_expected(config, fused):
    """The layers the fused loop runs for `config` with the switch at `fused`."""
    return config[5] if fused and config[2] <= MAX_BATCH else 0

# float32 against torch.nn (oneDNN / ATen): different summation orders.
ATOL = 2e-5
RTOL = 1e-4


def _ids(config):
    mode, T, B, I, H, L, bidirectional, proj = config
    name = f"{mode}-T{T}-B{B}-I{I}-H{H}-L{L}-{'bi' if bidirectional else 'uni'}"
    return name + (f"-P{proj}" if proj else "")


def _fused_layers():
    forward, _ = torch.ops.deeprnn._cpu_fused_step_layers()
    return forward


def _fused_backward_layers():
    _, backward = torch.ops.deeprnn._cpu_fused_step_layers()
    return backward


@pytest.fixture
def fused(request):
    """Sets the fused-step switch to request.param, restores it after."""
    previous = torch.ops.deeprnn._cpu_fused_step(request.param)
    yield request.param
    torch.ops.deeprnn._cpu_fused_step(previous)


@pytest.fixture(params=[1, 2, 3], ids=["1thread", "2threads", "3threads"])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


def _pair_and_inputs(config, dtype=torch.float32):
    mode, T, B, I, H, L, bidirectional, proj = config
    torch.manual_seed(zlib.crc32(repr(config).encode()))
    extra = {"proj_size": proj} if proj else {}
    reference, ours = make_pair(
        mode, dtype=dtype, input_size=I, hidden_size=H, num_layers=L,
        bidirectional=bidirectional, **extra)
    D = 2 if bidirectional else 1
    x = torch.randn(T, B, I, dtype=dtype)
    h0 = torch.randn(L * D, B, proj or H, dtype=dtype)
    state = (h0, torch.randn(L * D, B, H, dtype=dtype)) if mode == "LSTM" else h0
    return reference, ours, x, state


def _states(state):
    return state if isinstance(state, tuple) else (state,)


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)


def _lengths(config, kind):
    """None, or int64 lengths in 1..T with one full and one of length 1."""
    if kind is None:
        return None
    T, B = config[1], config[2]
    generator = torch.Generator().manual_seed(T * 100 + B)
    lengths = torch.randint(1, T + 1, (B,), generator=generator)
    lengths[0] = T
    if B > 1:
        lengths[-1] = 1
    return lengths


def _run(module, x, state, lengths, reference):
    """(output, state) of module; torch.nn takes lengths through packing."""
    if lengths is None:
        return module(x, state)
    if not reference:
        return module(x, state, lengths=lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, final = module(packed, state)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
    return out, final


LENGTHS = pytest.mark.parametrize("lengths", [None, "variable"], ids=["full", "lengths"])


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
@LENGTHS
@pytest.mark.parametrize("fused", [1, 0], ids=["fused", "general"], indirect=True)
def test_inference_matches_torch_nn(config, lengths, fused, threads):
    reference, ours, x, state = _pair_and_inputs(config)
    lens = _lengths(config, lengths)
    before = _fused_layers()
    with torch.no_grad():
        expected, expected_state = _run(reference, x, state, lens, True)
        actual, actual_state = _run(ours, x, state, lens, False)
    _close(actual, expected)
    for a, e in zip(_states(actual_state), _states(expected_state)):
        _close(a, e)
    assert _fused_layers() - before == _fused_expected(config, fused)


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
@LENGTHS
@pytest.mark.parametrize("fused", [1, 0], ids=["fused", "general"], indirect=True)
def test_training_matches_torch_nn(config, lengths, fused, threads):
    reference, ours, x, state = _pair_and_inputs(config)
    lens = _lengths(config, lengths)
    inputs = []
    for module in (reference, ours):
        xi = x.clone().requires_grad_()
        si = tuple(s.clone().requires_grad_() for s in _states(state))
        inputs.append((xi, si))
    before = _fused_layers()
    outs = [
        _run(module, xi, si if len(si) == 2 else si[0], lens, module is reference)
        for module, (xi, si) in zip((reference, ours), inputs)
    ]
    assert _fused_layers() - before == _fused_expected(config, fused)
    weights = torch.randn_like(outs[0][0])
    before = _fused_backward_layers()
    for out, final in outs:
        loss = (out * weights).sum()
        for s in _states(final):
            loss = loss + (s * s).sum()
        loss.backward()
    assert _fused_backward_layers() - before == _fused_expected(config, fused)
    (ex, es), (ax, as_) = inputs
    _close(outs[1][0], outs[0][0])
    _close(ax.grad, ex.grad)
    for a, e in zip(as_, es):
        _close(a.grad, e.grad)
    for (name, p), (_, q) in zip(ours.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    "why, config, dtype",
    [
        ("batch above the limit", ("GRU", 5, MAX_BATCH + 1, 4, 32, 1, False, 0),
         torch.float32),
        ("float64", ("LSTM", 5, 2, 4, 32, 1, False, 0), torch.float64),
        # 2 MiB of W_hh and W_ih to pack: 32 rows of steps pay for that.
        ("too few steps", ("LSTM", 4, 1, 256, 256, 1, False, 0), torch.float32),
        # 8.3 MiB of panels, beyond the 8 MiB that stay in the caches.
        ("weights too large", ("RNN_TANH", 140, 1, 1100, 1024, 1, False, 0),
         torch.float32),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
@LENGTHS
@pytest.mark.parametrize("fused", [1], ids=["on"], indirect=True)
def test_general_loop_where_the_fused_one_does_not_apply(
        why, config, dtype, lengths, fused):
    reference, ours, x, state = _pair_and_inputs(config, dtype=dtype)
    lens = _lengths(config, lengths)
    before = _fused_layers()
    with torch.no_grad():
        expected, _ = _run(reference, x, state, lens, True)
        actual, _ = _run(ours, x, state, lens, False)
    assert _fused_layers() == before, why
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("fused", [1], ids=["on"], indirect=True)
def test_fused_loop_starts_where_the_steps_pay_for_the_packing(fused):
    # LSTM, I = H = 256, B = 1. Inference packs W_hh and W_ih (2 MiB: 32
    # rows at 64 KiB a row); training packs W_hh only (1 MiB: 16 rows), in
    # its forward and its backward alike.
    for T, expected in [(31, 0), (32, 1)]:
        _, ours, x, state = _pair_and_inputs(("LSTM", T, 1, 256, 256, 1, False, 0))
        before = _fused_layers()
        with torch.no_grad():
            ours(x, state)
        assert _fused_layers() - before == expected, T
    for T, expected in [(15, 0), (16, 1)]:
        _, ours, x, state = _pair_and_inputs(("LSTM", T, 1, 256, 256, 1, False, 0))
        before = (_fused_layers(), _fused_backward_layers())
        out, _ = ours(x.requires_grad_(), state)
        out.sum().backward()
        after = (_fused_layers(), _fused_backward_layers())
        assert (after[0] - before[0], after[1] - before[1]) == (expected, expected), T


@pytest.mark.parametrize("fused", [1], ids=["on"], indirect=True)
def test_lengths_all_t_run_fused_and_equal_no_lengths(fused):
    config = ("GRU", 6, 4, 5, 32, 2, True, 0)
    _, ours, x, state = _pair_and_inputs(config)
    full = torch.full((x.shape[1],), x.shape[0], dtype=torch.int64)
    before = _fused_layers()
    with torch.no_grad():
        without, h_without = ours(x, state)
        with_full, h_with = ours(x, state, lengths=full)
    assert _fused_layers() - before == 2 * config[5]
    assert torch.equal(with_full, without)
    assert torch.equal(h_with, h_without)


def test_switch_returns_the_previous_value_and_checks_its_argument():
    previous = torch.ops.deeprnn._cpu_fused_step(-1)
    try:
        assert torch.ops.deeprnn._cpu_fused_step(0) == previous
        assert torch.ops.deeprnn._cpu_fused_step(-1) == 0
        assert torch.ops.deeprnn._cpu_fused_step(1) == 0
        assert torch.ops.deeprnn._cpu_fused_step(-1) == 1
        with pytest.raises(RuntimeError, match=r"deeprnn\._cpu_fused_step: enable must be "
                           r"-1 \(query\), 0 \(off\) or 1 \(on\), got 2"):
            torch.ops.deeprnn._cpu_fused_step(2)
        with pytest.raises(RuntimeError, match=r"deeprnn\._cpu_fused_step_layers: the "
                           r"counts only grow, got add_forward = -1"):
            torch.ops.deeprnn._cpu_fused_step_layers(-1, 0)
    finally:
        torch.ops.deeprnn._cpu_fused_step(previous)


@pytest.mark.parametrize("value, expected", [(None, "1"), ("", "1"), ("0", "0"), ("1", "1"),
                                             ("yes", "1")])
def test_environment_variable_sets_the_first_value(value, expected):
    result = python_with_variable(
        "import deeprnn, torch; print(torch.ops.deeprnn._cpu_fused_step())",
        "DEEPRNN_CPU_FUSED_STEP", value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    if value == "yes":
        assert "DEEPRNN_CPU_FUSED_STEP must be 0 or 1, got 'yes': it stays on" in result.stderr
