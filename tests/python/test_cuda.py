"""deeprnn on CUDA: the CUDA kernels against torch.nn (cuDNN), against our own
CPU kernels, gradcheck, half types, devices, streams and dropout.

Every test here is skipped, with the reason, where CUDA is absent or the
library was built without CUDA kernels (``cuda_skip_reason``).
``scripts/gpu_check.sh`` runs this file on a GPU machine; with
``DEEPRNN_GPU_REPORT=<path>`` the largest error of each kind of comparison is
written there as JSON, for that script's summary table.

float32 comparisons turn TF32 off for cuDNN and cuBLAS: cuDNN's RNNs use TF32
by default on Ampere and later GPUs, which would hide a float32 error of ours
behind a ~1e-3 error of theirs. Both sides then compute in IEEE float32 and the
tolerances are those of the CPU tests (DESIGN.md §5). The operator follows
torch's matmul TF32 setting; ``test_follows_matmul_tf32_setting`` checks that.

Inputs are fresh ``torch.randn`` draws, never zeros, and the CUDA caching
allocator is filled with NaN before each comparison, so that an output element
a kernel forgets to write reads NaN rather than a lucky zero.

Every test runs on two paths (the ``cuda_path`` parameter, ``general`` and
``fast`` in the test ids): with the switch of the CUDA fast paths
(``torch.ops.deeprnn._cuda_fast_path``) off, and on, where each layer that
fits takes the persistent forward kernel (csrc/cuda/persistent.cuh) and the
rest falls back to the general path. ``DEEPRNN_TEST_CUDA_PATHS`` (``general``,
``fast`` or ``general,fast``, the default) narrows that. The
``test_fast_path_*`` tests set the switch themselves and run once; they check
that the fast path runs where it fits (``_cuda_fast_path_layers`` counts the
layers of its forward and backward kernels), falls back where it does not,
both ways across the fit boundary, and agrees with the general path.
"""

import copy
import itertools
import json
import math
import os
import re
import warnings

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from deeprnn_test_utils import MODES, classes, cuda_skip_reason, module_kwargs, op_args, \
    public_op, random_states

REASON = cuda_skip_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"CUDA tests: {REASON}")

# Distinct small sizes, so that a number in an error message says which one it is.
SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 6, 5, 7, 10, 4

TOLERANCES = {
    # (forward, gradients) as keyword arguments of assert_close
    torch.float64: (dict(rtol=1e-10, atol=1e-10), dict(rtol=1e-10, atol=1e-10)),
    torch.float32: (dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-4, atol=1e-4)),
}
# Two runs of the same kernels on the same float64 data (another stream,
# another device): equal up to the summation order a GEMM may pick.
SAME = dict(rtol=1e-12, atol=1e-12)
# The same inputs with lengths on the CPU and on the GPU: the same answer, up
# to the order in which a weight gradient may sum the rows.
SAME_ROUNDING = {torch.float64: SAME, torch.float32: dict(rtol=1e-6, atol=1e-6)}

DTYPE_IDS = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16",
             torch.bfloat16: "bf16"}


# ----------------------------------------------------------------- report


class _ErrorReport:
    """Largest error per kind of comparison, for scripts/gpu_check.sh."""

    def __init__(self):
        self.kinds = {}

    def add(self, kind, case, got, expected):
        if _CURRENT_PATH[0] == "fast":
            kind = f"{kind} [fast path on]"
        got = got.detach().to("cpu", torch.float64)
        expected = expected.detach().to("cpu", torch.float64)
        if got.shape != expected.shape:
            return  # the caller's assertion reports it
        diff = got - expected
        max_abs = diff.abs().max().item() if diff.numel() else 0.0
        ref_norm = expected.norm().item()
        diff_norm = diff.norm().item()
        ratio = diff_norm / ref_norm if ref_norm > 0 else (0.0 if diff_norm == 0 else math.inf)
        max_abs = math.inf if math.isnan(max_abs) else max_abs
        ratio = math.inf if math.isnan(ratio) else ratio
        entry = self.kinds.setdefault(kind, {
            "checks": 0, "max_abs": 0.0, "max_abs_case": "",
            "max_norm_ratio": 0.0, "max_norm_ratio_case": "",
        })
        entry["checks"] += 1
        if max_abs > entry["max_abs"]:
            entry["max_abs"], entry["max_abs_case"] = max_abs, case
        if ratio > entry["max_norm_ratio"]:
            entry["max_norm_ratio"], entry["max_norm_ratio_case"] = ratio, case


REPORT = _ErrorReport()

# ------------------------------------------------------- general and fast path

PATHS = [p.strip() for p in os.environ.get("DEEPRNN_TEST_CUDA_PATHS", "general,fast").split(",")
         if p.strip()]
if not PATHS or set(PATHS) - {"general", "fast"}:
    raise ValueError("DEEPRNN_TEST_CUDA_PATHS must name general, fast or both "
                     f"(comma-separated), got {os.environ.get('DEEPRNN_TEST_CUDA_PATHS')!r}")
_CURRENT_PATH = ["general"]


def pytest_generate_tests(metafunc):
    """Every test on each of PATHS; the fast-path tests (which set the switch
    themselves) once."""
    if "cuda_path" in metafunc.fixturenames:
        own = metafunc.function.__name__.startswith("test_fast_path")
        metafunc.parametrize("cuda_path", ["own"] if own else PATHS, indirect=True)


def _fast_path(enable=-1):
    return torch.ops.deeprnn._cuda_fast_path(enable)


def _fast_layers():
    """Layers the persistent kernels have run in this process: (forward,
    backward)."""
    forward, backward = torch.ops.deeprnn._cuda_fast_path_layers()[:2]
    return forward, backward


def _stacked_layers():
    """Of those, the layers the stack kernels (the wavefront across a stack's
    layers) have run in this process: (forward, backward)."""
    forward, backward = torch.ops.deeprnn._cuda_fast_path_layers()[2:]
    return forward, backward


def _stacked_since(before):
    now = _stacked_layers()
    return now[0] - before[0], now[1] - before[1]


def _layers_since(before):
    now = _fast_layers()
    return now[0] - before[0], now[1] - before[1]


@pytest.fixture(autouse=True)
def cuda_path(request):
    """The switch of the CUDA fast paths during one test, restored after."""
    path = request.param
    previous = _fast_path(-1)
    if path != "own":
        _fast_path(1 if path == "fast" else 0)
    _CURRENT_PATH[0] = path
    try:
        yield path
    finally:
        _fast_path(previous)
        _CURRENT_PATH[0] = "general"


@pytest.fixture(scope="module", autouse=True)
def _write_report():
    yield
    path = os.environ.get("DEEPRNN_GPU_REPORT")
    if not path:
        return
    data = {
        "device": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "errors": REPORT.kinds,
        "paths": PATHS,
        "fast_path_layers": list(_fast_layers()),
        "stacked_layers": list(_stacked_layers()),
        "loop_graphs": list(_loop_graphs()),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)


@pytest.fixture(autouse=True)
def _ieee_float32():
    """TF32 off for cuDNN and cuBLAS during each test, restored after."""
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


# ----------------------------------------------------------------- helpers


def _poison_cuda_cache(device="cuda"):
    """Leaves NaN in the blocks the caching allocator hands out next.

    Blocks up to 1 MiB come from the small pool (2 MiB segments), larger ones
    from the large pool; a few of each, filled and freed, are what the next
    allocations (our outputs, workspaces, reserve) are carved from.
    """
    small = [torch.full((1 << 18,), math.nan, device=device) for _ in range(8)]  # 1 MiB each
    large = [torch.full((1 << 23,), math.nan, device=device) for _ in range(2)]  # 32 MiB each
    del small, large


def _module(mode, dtype, num_layers=2, bidirectional=True, batch_first=False, bias=True,
            proj=0, dropout=0.0, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE,
            device="cuda"):
    """A fresh torch.nn module: its weights are what both sides run on."""
    torch_cls, _ = classes(mode)
    kwargs = module_kwargs(mode, input_size=input_size, hidden_size=hidden_size,
                           num_layers=num_layers, bias=bias, batch_first=batch_first,
                           bidirectional=bidirectional, dropout=dropout, proj_size=proj)
    # Initialised on the CPU (the same draw whatever the device), then moved.
    return torch_cls(**kwargs, dtype=dtype).to(device)


def _mode(module):
    if isinstance(module, torch.nn.LSTM):
        return "LSTM"
    if isinstance(module, torch.nn.GRU):
        return "GRU"
    return "RNN_TANH" if module.nonlinearity == "tanh" else "RNN_RELU"


def _device(module):
    return module.weight_ih_l0.device


def _input(module, seq_len=SEQ_LEN, batch=BATCH):
    shape = (batch, seq_len, module.input_size) if module.batch_first else \
        (seq_len, batch, module.input_size)
    return torch.randn(shape, dtype=module.weight_ih_l0.dtype, device=_device(module))


def _states(module, batch=BATCH):
    h0, c0 = random_states(_mode(module), batch, module.num_layers, module.bidirectional,
                           module.hidden_size, getattr(module, "proj_size", 0),
                           module.weight_ih_l0.dtype)
    device = _device(module)
    return h0.to(device), None if c0 is None else c0.to(device)


def _lengths(seq_len, batch):
    """int64 lengths in 1..T holding T and 1 (where the batch allows), unsorted."""
    values = torch.randint(1, seq_len + 1, (batch,))
    values[0] = seq_len
    if batch > 1:
        values[1] = 1
    values = values[torch.randperm(batch)]
    if batch >= 2 and bool((values[:-1] >= values[1:]).all()):
        values = values.flip(0)  # never sorted descending by accident
    return values.to(torch.int64)


def _padding(lengths, seq_len, batch_first):
    """Boolean mask of the padded positions, (T, B) or (B, T)."""
    mask = torch.arange(seq_len).unsqueeze(1) >= lengths.cpu().unsqueeze(0)
    return mask.t() if batch_first else mask


def _ours(module, x, h0, c0, lengths=None, dropout=0.0, train=True, params=None):
    """The public operator on the module's own flat parameters."""
    mode = _mode(module)
    params = list(module._flat_weights) if params is None else params
    args = op_args(mode, x, h0, c0, params, module.bias, module.num_layers, dropout,
                   train, module.bidirectional, module.batch_first)
    return list(public_op(mode)(*args, lengths=lengths))


def _reference(module, x, h0, c0, lengths=None):
    """torch.nn (cuDNN on CUDA); with lengths, packed and unpacked to the
    padded layout (zeros past each length)."""
    mode = _mode(module)
    state = None if h0 is None else ((h0, c0) if mode == "LSTM" else h0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LSTM with projections is not supported")
        if lengths is None:
            output, states = module(x, state)
        else:
            seq_len = x.shape[1] if module.batch_first else x.shape[0]
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=module.batch_first,
                                          enforce_sorted=False)
            output, states = module(packed, state)
            output, _ = pad_packed_sequence(output, batch_first=module.batch_first,
                                            total_length=seq_len)
    return [output] + (list(states) if mode == "LSTM" else [states])


def _leaves(module, x, h0, c0, params=None):
    """Fresh leaves (input, states) that require grad, plus the parameters;
    returns (tensors, names)."""
    tensors, names = [x.detach().clone().requires_grad_()], ["input"]
    for name, t in (("h0", h0), ("c0", c0)):
        if t is not None:
            tensors.append(t.detach().clone().requires_grad_())
            names.append(name)
    params = list(module._flat_weights) if params is None else params
    return tensors + params, names + list(module._flat_weights_names)


def _run(fn, module, x, h0, c0, lengths, upstream=None, used=(0, 1, 2), params=None,
         **kwargs):
    """Forward through fn and the gradients of sum(upstream * results[used]) with
    respect to every leaf that requires grad. Returns (results, grads, upstream,
    names of the grads)."""
    leaves, names = _leaves(module, x, h0, c0, params)
    states = leaves[1:1 + (h0 is not None) + (c0 is not None)]
    h = states[0] if h0 is not None else None
    c = states[1] if c0 is not None else None
    if params is not None:
        kwargs["params"] = params
    results = fn(module, leaves[0], h, c, lengths, **kwargs)
    if upstream is None:
        upstream = [torch.randn_like(r) for r in results]
    chosen = [i for i in used if i < len(results)]
    wanted = [(t, n) for t, n in zip(leaves, names) if t.requires_grad]
    grads = torch.autograd.grad([results[i] for i in chosen], [t for t, _ in wanted],
                                [upstream[i] for i in chosen])
    return results, list(grads), upstream, [n for _, n in wanted]


def _compare(kind, case, got, expected, tol, what):
    assert got.shape == expected.shape, \
        f"{case}: {what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    assert got.dtype == expected.dtype, f"{case}: {what}: dtype {got.dtype} != {expected.dtype}"
    assert got.device == expected.device, \
        f"{case}: {what}: device {got.device} != {expected.device}"
    REPORT.add(kind, f"{case} {what}", got, expected)
    torch.testing.assert_close(got, expected, **tol, msg=lambda m: f"{case}: {what}: {m}")


def _compare_runs(kind, case, got, expected, forward_tol, grad_tol):
    """got/expected: what _run returns."""
    results, grads, _, names = got
    ref_results, ref_grads, _, ref_names = expected
    assert len(results) == len(ref_results), case
    assert names == ref_names, case
    for name, g, e in zip(["output", "hy", "cy"], results, ref_results):
        _compare(f"{kind} forward", case, g, e, forward_tol, name)
    for name, g, e in zip(names, grads, ref_grads):
        _compare(f"{kind} gradients", case, g, e, grad_tol, f"grad of {name}")


def _norm_ratio(value, reference):
    value, reference = value.detach().double().cpu(), reference.detach().double().cpu()
    return ((value - reference).norm() / reference.norm()).item()


def _case_id(mode, layers, bidirectional, batch_first, with_state, bias, proj, dtype,
             lengths=False):
    return (f"{mode}-L{layers}-{'bi' if bidirectional else 'uni'}"
            f"-{'bf' if batch_first else 'sf'}-{'state' if with_state else 'nostate'}"
            f"-{'bias' if bias else 'nobias'}-proj{proj}"
            f"{'-lengths' if lengths else ''}-{DTYPE_IDS[dtype]}")


# --------------------------------------------------- parity with torch.nn (cuDNN)


def _core_cases():
    """The Core matrix: mode x layers x directions x batch_first x initial state x
    dtype with biases; then no-bias and LSTM projection variants."""
    dtypes = [torch.float32, torch.float64]
    for mode, layers, bi, bf, state, dtype in itertools.product(
            MODES, [1, 2], [False, True], [False, True], [True, False], dtypes):
        yield mode, layers, bi, bf, state, True, 0, dtype
    for mode, layers, bi, dtype in itertools.product(MODES, [1, 2], [False, True], dtypes):
        yield mode, layers, bi, layers == 2, bi, False, 0, dtype
    for layers, bi, bf, state, dtype in itertools.product(
            [1, 2], [False, True], [False, True], [True, False], dtypes):
        yield "LSTM", layers, bi, bf, state, state != bf, PROJ_SIZE, dtype


def _params(cases, with_lengths=False):
    return [pytest.param(*case, id=_case_id(*case, lengths=with_lengths)) for case in cases]


@pytest.mark.parametrize(
    "mode, layers, bidirectional, batch_first, with_state, bias, proj, dtype",
    _params(_core_cases()))
def test_parity_with_cudnn(mode, layers, bidirectional, batch_first, with_state, bias, proj,
                           dtype):
    torch.manual_seed(1000)
    case = _case_id(mode, layers, bidirectional, batch_first, with_state, bias, proj, dtype)
    module = _module(mode, dtype, layers, bidirectional, batch_first, bias, proj)
    x = _input(module)
    h0, c0 = _states(module) if with_state else (None, None)
    expected = _run(_reference, module, x, h0, c0, None)
    _poison_cuda_cache()
    got = _run(_ours, module, x, h0, c0, None, upstream=expected[2])
    assert got[0][0].is_cuda and all(g.is_cuda for g in got[1])
    _compare_runs(f"cuDNN parity {DTYPE_IDS[dtype]}", case, got, expected, *TOLERANCES[dtype])


def _lengths_cases():
    dtypes = [torch.float32, torch.float64]
    for mode, layers, bi, bf, dtype in itertools.product(
            MODES, [1, 2], [False, True], [False, True], dtypes):
        yield mode, layers, bi, bf, layers != 2 or bf, True, 0, dtype
    for mode, dtype in itertools.product(MODES, dtypes):
        yield mode, 2, True, False, True, False, 0, dtype
    for layers, bi, dtype in itertools.product([1, 2], [False, True], dtypes):
        yield "LSTM", layers, bi, bi, True, not bi, PROJ_SIZE, dtype


@pytest.mark.parametrize(
    "mode, layers, bidirectional, batch_first, with_state, bias, proj, dtype",
    _params(_lengths_cases(), with_lengths=True))
def test_lengths_parity_with_packed_cudnn(mode, layers, bidirectional, batch_first, with_state,
                                          bias, proj, dtype):
    """lengths against torch.nn's packed path on CUDA; ours with the lengths on
    the CPU and on the GPU (the same answer); padded output and the gradient of
    padded input exactly zero."""
    torch.manual_seed(1001)
    case = _case_id(mode, layers, bidirectional, batch_first, with_state, bias, proj, dtype,
                    lengths=True)
    module = _module(mode, dtype, layers, bidirectional, batch_first, bias, proj)
    x = _input(module)
    h0, c0 = _states(module) if with_state else (None, None)
    lengths = _lengths(SEQ_LEN, BATCH)
    expected = _run(_reference, module, x, h0, c0, lengths)
    _poison_cuda_cache()
    got = _run(_ours, module, x, h0, c0, lengths, upstream=expected[2])
    _compare_runs(f"cuDNN packed parity {DTYPE_IDS[dtype]}", case, got, expected,
                  *TOLERANCES[dtype])
    padding = _padding(lengths, SEQ_LEN, batch_first).to(x.device)
    output, grad_x = got[0][0], got[1][0]
    assert torch.equal(output[padding], torch.zeros_like(output[padding])), \
        f"{case}: output past a sequence's length is not exactly zero"
    assert torch.equal(grad_x[padding], torch.zeros_like(grad_x[padding])), \
        f"{case}: gradient of padded input positions is not exactly zero"

    _poison_cuda_cache()
    on_gpu = _run(_ours, module, x, h0, c0, lengths.cuda(), upstream=expected[2])
    _compare_runs("lengths on GPU vs on CPU", case, on_gpu, got, SAME_ROUNDING[dtype],
                  SAME_ROUNDING[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("mode, proj", [(m, 0) for m in MODES] + [("LSTM", 150)])
def test_larger_shapes_against_cudnn(mode, proj, with_lengths, dtype):
    """Sizes that span many thread blocks and none of them a power of two:
    T=17, B=67, I=129, H=300 (LSTM also with P=150), 2 layers, bidirectional.
    Norm ratios: forward < 1e-5 (float32) and gradients < 1e-4. RNN_RELU's
    float32 gradients get 1e-2: with 1.4 million ReLU units, one whose
    pre-activation lies within float32 rounding of zero (about a one in four
    chance per draw) may take the other side in one implementation, and its
    whole gradient with it (a few 1e-3 of the norm)."""
    torch.manual_seed(1002)
    seq_len, batch = 17, 67
    module = _module(mode, dtype, 2, True, False, True, proj, input_size=129,
                     hidden_size=300)
    x = _input(module, seq_len, batch)
    h0, c0 = _states(module, batch)
    lengths = _lengths(seq_len, batch) if with_lengths else None
    case = f"{mode}-proj{proj}-{'lengths' if with_lengths else 'full'}-{DTYPE_IDS[dtype]}"
    expected = _run(_reference, module, x, h0, c0, lengths)
    _poison_cuda_cache()
    got = _run(_ours, module, x, h0, c0, lengths, upstream=expected[2])
    bounds = (1e-5, 1e-4) if dtype == torch.float32 else (1e-12, 1e-11)
    if mode == "RNN_RELU" and dtype == torch.float32:
        bounds = (1e-5, 1e-2)
    kind = f"cuDNN parity, large, {DTYPE_IDS[dtype]}"
    for name, g, e in zip(["output", "hy", "cy"], got[0], expected[0]):
        REPORT.add(f"{kind} forward", f"{case} {name}", g, e)
        assert g.shape == e.shape and g.dtype == e.dtype
        assert _norm_ratio(g, e) < bounds[0], f"{case}: {name}: {_norm_ratio(g, e):.3e}"
    for name, g, e in zip(got[3], got[1], expected[1]):
        REPORT.add(f"{kind} gradients", f"{case} grad of {name}", g, e)
        assert g.shape == e.shape and g.dtype == e.dtype
        assert _norm_ratio(g, e) < bounds[1], f"{case}: grad of {name}: {_norm_ratio(g, e):.3e}"


@pytest.mark.parametrize("mode", MODES)
def test_long_sequence_against_cudnn(mode):
    """T = 300 steps (more than any one-dimensional block of steps), float64."""
    torch.manual_seed(1003)
    module = _module(mode, torch.float64, 1, True, False, True,
                     PROJ_SIZE if mode == "LSTM" else 0)
    x = _input(module, seq_len=300, batch=3)
    h0, c0 = _states(module, 3)
    lengths = torch.tensor([300, 17, 299])
    for lengths_or_none in (None, lengths):
        expected = _run(_reference, module, x, h0, c0, lengths_or_none)
        _poison_cuda_cache()
        got = _run(_ours, module, x, h0, c0, lengths_or_none, upstream=expected[2])
        case = f"{mode}-T300-{'full' if lengths_or_none is None else 'lengths'}"
        _compare_runs("cuDNN parity long f64", case, got, expected, *TOLERANCES[torch.float64])


# Variants: (results the loss reads, input needs grad, parameters need grad)
PARTIAL = {
    "loss_on_states_only": ((1, 2), True, True),
    "loss_on_output_only": ((0,), True, True),
    "input_grad_only": ((0, 1, 2), True, False),
    "weight_grads_only": ((0, 1, 2), False, True),
}


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("variant", list(PARTIAL))
@pytest.mark.parametrize("mode", MODES)
def test_partial_gradients_against_cudnn(mode, variant, with_lengths):
    """Backward with only some results in the loss and only some gradients
    wanted (the initial states never need one here)."""
    used, input_grad, weight_grads = PARTIAL[variant]
    torch.manual_seed(1004)
    module = _module(mode, torch.float64, proj=PROJ_SIZE if mode == "LSTM" else 0)
    x = _input(module)
    h0, c0 = _states(module)
    lengths = _lengths(SEQ_LEN, BATCH) if with_lengths else None
    # Our side runs on copies that require grad only where wanted, so that
    # its backward is asked for exactly those gradients.
    params = [p.detach().clone().requires_grad_(weight_grads) for p in module._flat_weights]

    def run(fn, weights, upstream=None):
        xi = x.clone().requires_grad_(input_grad)
        if fn is _ours:
            results = _ours(module, xi, h0, c0, lengths, params=weights)
        else:
            results = _reference(module, xi, h0, c0, lengths)
        targets = ([xi] if input_grad else []) + (list(weights) if weight_grads else [])
        if upstream is None:
            upstream = [torch.randn_like(r) for r in results]
        chosen = [i for i in used if i < len(results)]
        grads = torch.autograd.grad([results[i] for i in chosen], targets,
                                    [upstream[i] for i in chosen])
        return grads, upstream

    expected, upstream = run(_reference, list(module._flat_weights))
    _poison_cuda_cache()
    got, _ = run(_ours, params, upstream)
    names = (["input"] if input_grad else []) + \
        (list(module._flat_weights_names) if weight_grads else [])
    assert len(got) == len(expected) == len(names)
    case = f"{mode}-{variant}-{'lengths' if with_lengths else 'full'}"
    tol = TOLERANCES[torch.float64][1]
    for name, g, e in zip(names, got, expected):
        _compare("cuDNN parity partial gradients f64", case, g, e, tol, f"grad of {name}")


# ------------------------------------------------- our CUDA kernels vs our CPU kernels


def _cpu_cases():
    for mode, dtype, with_lengths in itertools.product(
            MODES, [torch.float32, torch.float64], [False, True]):
        yield pytest.param(mode, 0, dtype, with_lengths,
                           id=f"{mode}-{DTYPE_IDS[dtype]}-{'lengths' if with_lengths else 'full'}")
    for dtype, with_lengths in itertools.product([torch.float32, torch.float64], [False, True]):
        yield pytest.param("LSTM", PROJ_SIZE, dtype, with_lengths,
                           id=f"LSTM-proj-{DTYPE_IDS[dtype]}-"
                              f"{'lengths' if with_lengths else 'full'}")


@pytest.mark.parametrize("mode, proj, dtype, with_lengths", list(_cpu_cases()))
def test_cuda_kernels_match_cpu_kernels(mode, proj, dtype, with_lengths):
    """The same operator, the same inputs, on the CPU and on the GPU."""
    torch.manual_seed(1010)
    for batch_first, bias in ((False, True), (True, False)):
        cpu_module = _module(mode, dtype, 2, True, batch_first, bias, proj, device="cpu")
        gpu_module = copy.deepcopy(cpu_module).cuda()
        x = _input(cpu_module)
        h0, c0 = _states(cpu_module)
        lengths = _lengths(SEQ_LEN, BATCH) if with_lengths else None
        expected = _run(_ours, cpu_module, x, h0, c0, lengths)
        _poison_cuda_cache()
        got = _run(_ours, gpu_module, x.cuda(), h0.cuda(), None if c0 is None else c0.cuda(),
                   lengths, upstream=[u.cuda() for u in expected[2]])
        as_cpu = ([r.cpu() for r in got[0]], [g.cpu() for g in got[1]], None, got[3])
        case = f"{mode}-proj{proj}-{'bf' if batch_first else 'sf'}-" \
               f"{'bias' if bias else 'nobias'}-{'lengths' if with_lengths else 'full'}-" \
               f"{DTYPE_IDS[dtype]}"
        _compare_runs(f"CUDA vs CPU {DTYPE_IDS[dtype]}", case, as_cpu, expected,
                      *TOLERANCES[dtype])


@pytest.mark.parametrize("mode", MODES)
def test_cuda_kernels_match_cpu_kernels_large(mode):
    """float64, T=23, B=70, I=65, H=130, 2 layers, bidirectional, lengths."""
    torch.manual_seed(1011)
    proj = 50 if mode == "LSTM" else 0
    cpu_module = _module(mode, torch.float64, 2, True, False, True, proj, input_size=65,
                         hidden_size=130, device="cpu")
    gpu_module = copy.deepcopy(cpu_module).cuda()
    x = _input(cpu_module, 23, 70)
    h0, c0 = _states(cpu_module, 70)
    lengths = _lengths(23, 70)
    expected = _run(_ours, cpu_module, x, h0, c0, lengths)
    _poison_cuda_cache()
    got = _run(_ours, gpu_module, x.cuda(), h0.cuda(), None if c0 is None else c0.cuda(),
               lengths.cuda(), upstream=[u.cuda() for u in expected[2]])
    as_cpu = ([r.cpu() for r in got[0]], [g.cpu() for g in got[1]], None, got[3])
    _compare_runs("CUDA vs CPU f64 large", mode, as_cpu, expected, *TOLERANCES[torch.float64])


# ------------------------------------------------------------------ gradcheck


def _gradcheck_setup(mode, proj, bias=True):
    torch.manual_seed(1020)
    module = _module(mode, torch.float64, 2, True, False, bias, proj, input_size=2,
                     hidden_size=3)
    params = [p.detach().clone().requires_grad_() for p in module._flat_weights]
    x = _input(module, seq_len=3, batch=3).requires_grad_()
    h0, c0 = _states(module, 3)
    states = [h0.requires_grad_()] + ([c0.requires_grad_()] if c0 is not None else [])
    return module, x, states, params


def _gradcheck_function(module, num_states, lengths, dropout=0.0, seed=None):
    def f(x, *rest):
        h0 = rest[0]
        c0 = rest[1] if num_states == 2 else None
        params = list(rest[num_states:])
        if seed is not None:
            torch.manual_seed(seed)  # the same dropout masks on every call
        return tuple(_ours(module, x, h0, c0, lengths, dropout=dropout, params=params))

    return f


@pytest.mark.parametrize("lengths_on", [None, "cpu", "cuda"])
@pytest.mark.parametrize("mode, proj, bias",
                         [(m, 0, True) for m in MODES] + [("LSTM", 2, True), ("GRU", 0, False)])
def test_gradcheck_on_cuda(mode, proj, bias, lengths_on):
    module, x, states, params = _gradcheck_setup(mode, proj, bias)
    lengths = None if lengths_on is None else torch.tensor([2, 3, 1], device=lengths_on)
    f = _gradcheck_function(module, len(states), lengths)
    assert gradcheck(f, [x] + states + params, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_with_dropout_on_cuda(mode):
    """The backward uses the forward's dropout masks (seeded per call)."""
    module, x, states, params = _gradcheck_setup(mode, PROJ_SIZE // 2 if mode == "LSTM" else 0)
    f = _gradcheck_function(module, len(states), None, dropout=0.4, seed=7)
    no_dropout = _gradcheck_function(module, len(states), None)
    assert not torch.allclose(f(x, *states, *params)[0], no_dropout(x, *states, *params)[0])
    assert gradcheck(f, [x] + states + params, eps=1e-6, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------- float16 and bfloat16


RELU_GRAD_FLOOR = {torch.float16: 0.1, torch.bfloat16: 0.25}


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("mode", MODES)
def test_half_types_against_float64_reference(mode, dtype, with_lengths):
    """|ours - ref| / |ref| < 1e-2 for the results and every gradient, where
    ref is torch.nn in float64 (on the CPU) on exactly the rounded weights,
    input, states and upstream gradients.

    RNN_RELU's gradients are the exception: a rounding can move a ReLU
    pre-activation across zero and switch that unit's gradient on or off, and
    with thousands of units some always sit that close. Measured on the CPU
    kernels, over six draws of this shape, torch.nn's own error in the same
    dtype ranged 3e-4..7e-2 (float16) and 6e-3..1.2e-1 (bfloat16), ours
    alike, depending on which units flipped. There the bound is the largest
    of twice torch.nn's error on this draw and RELU_GRAD_FLOOR (which catches
    a wrong formula, not rounding); the gradient math itself is held to 1e-10
    in float64 above."""
    torch.manual_seed(1030)
    proj = 24 if mode == "LSTM" else 0
    seq_len, batch = 10, 8
    low = _module(mode, dtype, 2, True, False, True, proj, input_size=32, hidden_size=48)
    reference = _module(mode, torch.float64, 2, True, False, True, proj, input_size=32,
                        hidden_size=48, device="cpu")
    reference.load_state_dict({k: v.double().cpu() for k, v in low.state_dict().items()})
    x = _input(low, seq_len, batch)
    h0, c0 = _states(low, batch)
    lengths = _lengths(seq_len, batch) if with_lengths else None
    cpu64 = [None if t is None else t.detach().cpu().double() for t in (x, h0, c0)]
    # Upstream gradients rounded to dtype, so that both sides get the same ones.
    shapes = _run(_reference, reference, *cpu64, lengths)[2]
    upstream_low = [torch.randn_like(u).to(dtype) for u in shapes]
    expected = _run(_reference, reference, *cpu64, lengths,
                    upstream=[u.double() for u in upstream_low])
    _poison_cuda_cache()
    got = _run(_ours, low, x, h0, c0, lengths, upstream=[u.cuda() for u in upstream_low])
    case = f"{mode}-{DTYPE_IDS[dtype]}-{'lengths' if with_lengths else 'full'}"
    for name, g, e in zip(["output", "hy", "cy"], got[0], expected[0]):
        assert g.dtype == dtype and g.is_cuda
        REPORT.add(f"{DTYPE_IDS[dtype]} vs f64 forward", f"{case} {name}", g, e)
        assert _norm_ratio(g, e) < 1e-2, f"{case}: {name}: {_norm_ratio(g, e):.3e}"
    bound = 1e-2
    if mode == "RNN_RELU":
        torch_low = _module(mode, dtype, 2, True, False, True, proj, input_size=32,
                            hidden_size=48, device="cpu")
        torch_low.load_state_dict({k: v.cpu() for k, v in low.state_dict().items()})
        cpu_low = [None if t is None else t.detach().cpu() for t in (x, h0, c0)]
        torch_got = _run(_reference, torch_low, *cpu_low, lengths, upstream=upstream_low)
        torch_error = max(_norm_ratio(t, e) for t, e in zip(torch_got[1], expected[1]))
        bound = max(RELU_GRAD_FLOOR[dtype], 2 * torch_error)
    kind = f"{DTYPE_IDS[dtype]} vs f64 gradients" + (" (RNN_RELU)" if mode == "RNN_RELU" else "")
    for name, g, e in zip(got[3], got[1], expected[1]):
        assert g.dtype == dtype and g.is_cuda
        REPORT.add(kind, f"{case} grad of {name}", g, e)
        assert _norm_ratio(g, e) < bound, \
            f"{case}: grad of {name}: {_norm_ratio(g, e):.3e} >= {bound:.3e}"


# ------------------------------------------------------------------------ TF32


def test_follows_matmul_tf32_setting():
    """With torch.backends.cuda.matmul.allow_tf32 off (torch's default) the
    operator computes float32 in IEEE arithmetic: its error against float64
    stays at float32 rounding (< 2e-5) on a shape where TF32 would give ~1e-3.
    With it on, the result must stay sane (< 1e-2); both numbers go to the
    report."""
    torch.manual_seed(1040)
    module = _module("LSTM", torch.float32, 2, True, False, True, 0, input_size=512,
                     hidden_size=512)
    reference = _module("LSTM", torch.float64, 2, True, False, True, 0, input_size=512,
                        hidden_size=512)
    reference.load_state_dict({k: v.double() for k, v in module.state_dict().items()})
    x = _input(module, 8, 64)
    h0, c0 = _states(module, 64)
    with torch.no_grad():
        expected = _reference(reference, x.double(), h0.double(), c0.double())
        ieee = _ours(module, x, h0, c0)
        torch.backends.cuda.matmul.allow_tf32 = True
        tf32 = _ours(module, x, h0, c0)
        torch.backends.cuda.matmul.allow_tf32 = False
    REPORT.add("float32, matmul TF32 off, vs f64", "LSTM 512", ieee[0], expected[0])
    REPORT.add("float32, matmul TF32 on, vs f64", "LSTM 512", tf32[0], expected[0])
    assert _norm_ratio(ieee[0], expected[0]) < 2e-5
    assert _norm_ratio(tf32[0], expected[0]) < 1e-2


# ------------------------------------------------------------- devices, dtypes


def _error_setup(mode, device="cuda"):
    torch.manual_seed(1050)
    module = _module(mode, torch.float32, proj=PROJ_SIZE if mode == "LSTM" else 0,
                     device=device)
    x = _input(module)
    h0, c0 = _states(module)
    return module, x, h0, c0


def _op_name(mode):
    return {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}[mode]


@pytest.mark.parametrize("mode", MODES)
def test_error_weights_on_cpu_input_on_cuda(mode):
    module, x, h0, c0 = _error_setup(mode)
    cpu_params = [p.detach().cpu() for p in module._flat_weights]
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{_op_name(mode)}: all parameters must "
                                           r"be on the device of input \(cuda:0\), got cpu"):
        _ours(module, x, h0, c0, params=cpu_params)


@pytest.mark.parametrize("mode", MODES)
def test_error_input_on_cpu_weights_on_cuda(mode):
    module, x, h0, c0 = _error_setup(mode)
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{_op_name(mode)}: .*must be on the "
                                           r"device of input \(cpu\), got cuda:0"):
        _ours(module, x.cpu(), h0.cpu(), None if c0 is None else c0.cpu())


@pytest.mark.parametrize("mode", MODES)
def test_error_states_on_cpu_input_on_cuda(mode):
    module, x, h0, c0 = _error_setup(mode)
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{_op_name(mode)}: hx must be on the "
                                           r"device of input \(cuda:0\), got cpu"):
        _ours(module, x, h0.cpu(), c0)
    if mode == "LSTM":
        with pytest.raises(RuntimeError, match=r"deeprnn\.lstm: cx must be on the device of "
                                               r"input \(cuda:0\), got cpu"):
            _ours(module, x, h0, c0.cpu())


def _need_two_devices():
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs two CUDA devices, this machine has {torch.cuda.device_count()}")


@pytest.mark.parametrize("mode", MODES)
def test_error_tensors_on_another_cuda_device(mode):
    _need_two_devices()
    module, x, h0, c0 = _error_setup(mode)
    op = _op_name(mode)
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{op}: hx must be on the device of "
                                           r"input \(cuda:0\), got cuda:1"):
        _ours(module, x, h0.to("cuda:1"), c0)
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{op}: lengths must be on the CPU or on "
                                           r"the device of input \(cuda:0\), got cuda:1"):
        _ours(module, x, h0, c0, lengths=_lengths(SEQ_LEN, BATCH).to("cuda:1"))
    other = [p.detach().to("cuda:1") for p in module._flat_weights]
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{op}: all parameters must be on the "
                                           r"device of input \(cuda:0\), got cuda:1"):
        _ours(module, x, h0, c0, params=other)


@pytest.mark.parametrize("mode", MODES)
def test_error_unsupported_dtypes_on_cuda(mode):
    module, x, h0, c0 = _error_setup(mode)
    op = _op_name(mode)
    for bad in (torch.int32, torch.int64, torch.complex64):
        xb = (x * 10).to(bad)
        with pytest.raises(RuntimeError, match=rf"deeprnn\.{op}: input must be a floating point "
                                               r"tensor \(float, double, bfloat16 or half\)"):
            _ours(module, xb, None, None)
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{op}: all parameters must have the dtype "
                                           r"of input \(double\), got float"):
        _ours(module, x.double(), None, None)
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{op}: hx must have the dtype of input "
                                           r"\(float\), got half"):
        _ours(module, x, h0.half(), c0)


@pytest.mark.parametrize("mode", MODES)
def test_error_bad_lengths_on_cuda(mode):
    module, x, h0, c0 = _error_setup(mode)
    op = _op_name(mode)
    good = _lengths(SEQ_LEN, BATCH)
    with pytest.raises(RuntimeError, match=rf"deeprnn\.{op}: lengths must be an int64 tensor"):
        _ours(module, x, h0, c0, lengths=good.to("cuda", torch.int32))
    for bad_value in (0, SEQ_LEN + 1):
        bad = good.clone()
        bad[2] = bad_value
        with pytest.raises(RuntimeError, match=rf"deeprnn\.{op}: lengths"):
            _ours(module, x, h0, c0, lengths=bad.cuda())
    # The error left the device usable: a valid call still matches the reference.
    expected = _reference(module, x, h0, c0, good)
    got = _ours(module, x, h0, c0, lengths=good.cuda())
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **TOLERANCES[torch.float32][0])


# --------------------------------------------------- streams and device index


def _float64_case(mode, with_lengths, device="cuda"):
    torch.manual_seed(1060)
    module = _module(mode, torch.float64, proj=PROJ_SIZE if mode == "LSTM" else 0,
                     input_size=33, hidden_size=70, device=device)
    x = _input(module, 9, 12)
    h0, c0 = _states(module, 12)
    lengths = _lengths(9, 12) if with_lengths else None
    return module, x, h0, c0, lengths


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("mode", MODES)
def test_results_do_not_depend_on_current_stream(mode, with_lengths):
    """Forward and backward on a side stream that is held back by a long sleep
    kernel: a launch or copy that escaped to another stream would run before
    its inputs are ready and read garbage (NaN from the poisoned cache)."""
    module, x, h0, c0, lengths = _float64_case(mode, with_lengths)
    if lengths is not None:
        lengths = lengths.cuda()
    expected = _run(_ours, module, x, h0, c0, lengths)
    side = torch.cuda.Stream()
    _poison_cuda_cache()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # tens of ms at H100 clocks
        got = _run(_ours, module, x, h0, c0, lengths, upstream=expected[2])
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    case = f"{mode}-{'lengths' if with_lengths else 'full'}"
    _compare_runs("side stream vs current stream", case, got, expected, SAME, SAME)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("mode", MODES)
def test_results_do_not_depend_on_device_index(mode, with_lengths):
    """Tensors on cuda:1 while cuda:0 is current, and on cuda:0 while cuda:1
    is current: the operator must work on its tensors' device."""
    _need_two_devices()
    module, x, h0, c0, lengths = _float64_case(mode, with_lengths)
    expected = _run(_ours, module, x, h0, c0, lengths)
    expected_cpu = ([r.cpu() for r in expected[0]], [g.cpu() for g in expected[1]], None,
                    expected[3])
    other = module.to("cuda:1")
    moved = [None if t is None else t.to("cuda:1") for t in (x, h0, c0)]
    lengths1 = None if lengths is None else lengths.to("cuda:1")
    assert torch.cuda.current_device() == 0
    got = _run(_ours, other, *moved, lengths1, upstream=[u.to("cuda:1") for u in expected[2]])
    assert got[0][0].device == torch.device("cuda:1")
    as_cpu = ([r.cpu() for r in got[0]], [g.cpu() for g in got[1]], None, got[3])
    case = f"{mode}-{'lengths' if with_lengths else 'full'}"
    _compare_runs("cuda:1 vs cuda:0", f"{case}-on-cuda1", as_cpu, expected_cpu, SAME, SAME)

    back = other.to("cuda:0")
    with torch.cuda.device(1):
        got = _run(_ours, back, x, h0, c0, lengths, upstream=expected[2])
    as_cpu = ([r.cpu() for r in got[0]], [g.cpu() for g in got[1]], None, got[3])
    _compare_runs("cuda:1 vs cuda:0", f"{case}-current-cuda1", as_cpu, expected_cpu, SAME, SAME)


# --------------------------------------------------------------------- dropout


@pytest.mark.parametrize("mode", MODES)
def test_dropout_on_cuda_is_seeded(mode):
    """The same seed gives the same masks (forward and gradients), another seed
    other masks; without training, dropout does nothing."""
    module, x, h0, c0, lengths = _float64_case(mode, False)

    def seeded(seed, train=True, dropout=0.5):
        torch.manual_seed(seed)
        return _run(_ours, module, x, h0, c0, None, upstream=upstream, dropout=dropout,
                    train=train)

    upstream = _run(_ours, module, x, h0, c0, None)[2]
    first, second, other = seeded(123), seeded(123), seeded(124)
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        assert torch.equal(a, b)
    assert not torch.equal(first[0][0], other[0][0])
    no_dropout = seeded(5, dropout=0.0)
    assert not torch.equal(first[0][0], no_dropout[0][0])
    evaluated = seeded(6, train=False)
    _compare_runs("dropout in eval vs no dropout", mode, evaluated, no_dropout, SAME, SAME)


# --------------------------------------------------------------- odd arguments


@pytest.mark.parametrize("mode", MODES)
def test_small_and_odd_shapes_against_cudnn(mode):
    """T = 1, B = 1, hidden size 1, and non-contiguous input, states and weights."""
    torch.manual_seed(1070)
    proj = PROJ_SIZE if mode == "LSTM" else 0
    for seq_len, batch, hidden, proj_here in ((1, BATCH, HIDDEN_SIZE, proj),
                                              (SEQ_LEN, 1, HIDDEN_SIZE, proj),
                                              (SEQ_LEN, BATCH, 1, 0)):
        module = _module(mode, torch.float64, proj=proj_here, hidden_size=hidden)
        x = _input(module, seq_len, batch)
        h0, c0 = _states(module, batch)
        for lengths in (None, _lengths(seq_len, batch)):
            expected = _run(_reference, module, x, h0, c0, lengths)
            _poison_cuda_cache()
            got = _run(_ours, module, x, h0, c0, lengths, upstream=expected[2])
            case = (f"{mode}-T{seq_len}-B{batch}-H{hidden}-"
                    f"{'full' if lengths is None else 'lengths'}")
            _compare_runs("cuDNN parity small shapes f64", case, got, expected,
                          *TOLERANCES[torch.float64])

    module = _module(mode, torch.float64, proj=proj)
    x = _input(module)
    h0, c0 = _states(module)
    x_odd = torch.randn(SEQ_LEN, BATCH, 2 * INPUT_SIZE, dtype=torch.float64, device="cuda")
    x_odd[..., ::2] = x
    x_odd = x_odd[..., ::2]
    h0_odd = h0.transpose(0, 1).contiguous().transpose(0, 1)
    params_odd = [p.detach().t().contiguous().t() if p.dim() == 2 else
                  torch.stack([p.detach(), p.detach()], 1)[:, 0] for p in module._flat_weights]
    assert not x_odd.is_contiguous() and not h0_odd.is_contiguous()
    assert not any(p.is_contiguous() for p in params_odd)
    expected = _reference(module, x, h0, c0)
    _poison_cuda_cache()
    got = _ours(module, x_odd, h0_odd, c0, params=params_odd)
    for name, g, e in zip(["output", "hy", "cy"], got, expected):
        _compare("cuDNN parity non-contiguous f64", mode, g, e, TOLERANCES[torch.float64][0],
                 name)


@pytest.mark.parametrize("mode", MODES)
def test_batch_of_size_zero_as_on_cpu(mode):
    """B = 0 on CUDA gives what it gives on the CPU (shapes, or the same error)."""
    torch.manual_seed(1071)
    cpu_module = _module(mode, torch.float64, proj=PROJ_SIZE if mode == "LSTM" else 0,
                         device="cpu")
    x = torch.randn(SEQ_LEN, 0, INPUT_SIZE, dtype=torch.float64)

    def run(module, x):
        x = x.clone().requires_grad_()
        results = _ours(module, x, None, None)
        grads = torch.autograd.grad(sum(r.sum() for r in results),
                                    [x] + list(module._flat_weights), allow_unused=True)
        return results, grads

    try:
        expected = run(cpu_module, x)
    except RuntimeError as error:
        with pytest.raises(RuntimeError, match=re.escape(str(error).splitlines()[0])):
            run(cpu_module.cuda(), x.cuda())
        return
    got = run(cpu_module.cuda(), x.cuda())
    for g, e in zip(got[0], expected[0]):
        assert g.shape == e.shape and g.is_cuda
    for g, e in zip(got[1], expected[1]):
        assert (g is None) == (e is None)
        if g is not None:
            assert g.shape == e.shape
            torch.testing.assert_close(g.cpu(), e)


# --------------------------------------------------------------------- modules


@pytest.mark.parametrize("mode", MODES)
def test_modules_on_cuda_match_torch_nn(mode):
    """deeprnn.LSTM/GRU/RNN moved with .cuda(), loading torch.nn's state_dict:
    padded and PackedSequence input, outputs and parameter gradients."""
    torch.manual_seed(1080)
    torch_cls, our_cls = classes(mode)
    kwargs = module_kwargs(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=2,
                           bidirectional=True, proj_size=PROJ_SIZE)
    reference = torch_cls(**kwargs, dtype=torch.float64).cuda()
    ours = our_cls(**kwargs, dtype=torch.float64)
    ours.load_state_dict(reference.state_dict())
    ours = ours.cuda()
    assert all(p.is_cuda for p in ours.parameters())
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64, device="cuda")
    lengths = _lengths(SEQ_LEN, BATCH)
    for packed in (False, True):
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
        _poison_cuda_cache()
        got_out, got_state = ours(inp)
        exp_out, exp_state = reference(inp)
        if packed:
            got_out, exp_out = got_out.data, exp_out.data
        got = [got_out] + (list(got_state) if mode == "LSTM" else [got_state])
        expected = [exp_out] + (list(exp_state) if mode == "LSTM" else [exp_state])
        case = f"{mode}-{'packed' if packed else 'padded'}"
        for name, g, e in zip(["output", "hy", "cy"], got, expected):
            _compare("modules on CUDA f64", case, g, e, TOLERANCES[torch.float64][0], name)
        upstream = [torch.randn_like(e) for e in expected]
        got_grads = torch.autograd.grad(got, list(ours.parameters()), upstream)
        exp_grads = torch.autograd.grad(expected, list(reference.parameters()), upstream)
        for (name, _), g, e in zip(ours.named_parameters(), got_grads, exp_grads):
            _compare("modules on CUDA f64", case, g, e, TOLERANCES[torch.float64][1],
                     f"grad of {name}")


# ------------------------------------------------ fast path: fits and falls back
#
# The persistent kernels (csrc/cuda/persistent.cuh) take a layer's forward,
# and the time loop of its backward, when the switch is on, the layer has no
# LSTM projection, and the W_hh slices of a co-resident grid fit in shared
# memory (each pass decides for itself). These tests set the switch
# themselves (they run once, not per cuda_path).


def _both_paths(module, x, h0, c0, lengths=None, train=True):
    """The same call with the switch off and on: (general, fast, (forward,
    backward) layers the fast path ran in the second call)."""
    upstream = None
    runs = []
    for enable in (0, 1):
        _fast_path(enable)
        before = _fast_layers()
        _poison_cuda_cache()
        if train:
            result = _run(_ours, module, x, h0, c0, lengths, upstream=upstream)
            upstream = result[2]
        else:
            with torch.no_grad():
                result = (_ours(module, x, h0, c0, lengths), [], None, [])
        runs.append((result, _layers_since(before)))
    assert runs[0][1] == (0, 0), "the fast path ran with the switch off"
    return runs[0][0], runs[1][0], runs[1][1]


def _compare_paths(case, general, fast, dtype, bounds=None):
    """fast against general: assert_close for float32/float64, norm ratios
    (`bounds` = (forward, gradients)) where given."""
    kind = f"fast vs general path {DTYPE_IDS[dtype]}"
    if bounds is None:
        _compare_runs(kind, case, fast, general, *TOLERANCES[dtype])
        return
    for name, g, e in zip(["output", "hy", "cy"], fast[0], general[0]):
        REPORT.add(f"{kind} forward", f"{case} {name}", g, e)
        assert g.shape == e.shape and g.dtype == e.dtype
        assert _norm_ratio(g, e) < bounds[0], f"{case}: {name}: {_norm_ratio(g, e):.3e}"
    for name, g, e in zip(fast[3], fast[1], general[1]):
        REPORT.add(f"{kind} gradients", f"{case} grad of {name}", g, e)
        assert _norm_ratio(g, e) < bounds[1], f"{case}: grad of {name}: {_norm_ratio(g, e):.3e}"


def test_fast_path_switch(cuda_path):
    previous = _fast_path(-1)
    try:
        assert previous in (0, 1)
        assert _fast_path(1) == previous
        assert _fast_path(-1) == 1
        assert _fast_path(0) == 1
        assert _fast_path() == 0
        for bad in (2, -2):
            with pytest.raises(RuntimeError, match=r"deeprnn\._cuda_fast_path: enable must be "
                                                   rf"-1 \(query\), 0 \(off\) or 1 \(on\), got {bad}"):
                _fast_path(bad)
        assert _fast_path() == 0
    finally:
        _fast_path(previous)


@pytest.mark.parametrize("value, expected", [(None, 0), ("0", 0), ("1", 1), ("yes", 0)])
def test_fast_path_switch_from_environment(cuda_path, value, expected):
    """DEEPRNN_CUDA_FAST_PATH sets the switch's first value: unset or 0 off,
    1 on, anything else off with a warning."""
    import subprocess
    import sys
    env = dict(os.environ)
    env.pop("DEEPRNN_CUDA_FAST_PATH", None)
    if value is not None:
        env["DEEPRNN_CUDA_FAST_PATH"] = value
    code = ("import os, torch\n"
            "lib = os.environ.get('DEEPRNN_LIBRARY')\n"
            "torch.ops.load_library(lib) if lib else __import__('deeprnn')\n"
            "print(torch.ops.deeprnn._cuda_fast_path())\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(expected)
    if value == "yes":
        assert "DEEPRNN_CUDA_FAST_PATH must be 0 or 1" in result.stderr


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["f32", "f64", "f16", "bf16"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("mode", MODES)
def test_fast_path_runs_where_it_fits(cuda_path, mode, bidirectional, dtype, with_lengths):
    """A small stack (2 layers) fits: both layers take the fast path, and its
    results and the gradients of the general backward on its reserve match
    the general path's."""
    torch.manual_seed(1100)
    module = _module(mode, dtype, 2, bidirectional, False, True, 0)
    x = _input(module)
    h0, c0 = _states(module)
    lengths = _lengths(SEQ_LEN, BATCH) if with_lengths else None
    stacked = _stacked_layers()
    general, fast, layers = _both_paths(module, x, h0, c0, lengths)
    stacked = _stacked_since(stacked)
    case = f"{mode}-{'bi' if bidirectional else 'uni'}-{DTYPE_IDS[dtype]}-" \
           f"{'lengths' if with_lengths else 'full'}"
    assert layers == (2, 2), f"{case}: the fast path ran {layers} of 2 layers (fwd, bwd)"
    # One direction: both layers in one launch of the stack kernels, each way.
    expected = (0, 0) if bidirectional else (2, 2)
    assert stacked == expected, f"{case}: {stacked} layers stacked (fwd, bwd)"
    bounds = None
    if dtype in (torch.float16, torch.bfloat16):
        # Both paths round alike, but sum the recurrent products in another
        # order: a half-type ReLU unit at zero may still flip (see
        # test_half_types_against_float64_reference).
        bounds = (1e-2, RELU_GRAD_FLOOR[dtype] if mode == "RNN_RELU" else 2e-2)
    _compare_paths(case, general, fast, dtype, bounds)
    if lengths is not None:
        padding = _padding(lengths, SEQ_LEN, False).to(x.device)
        output = fast[0][0]
        assert torch.equal(output[padding], torch.zeros_like(output[padding]))


@pytest.mark.parametrize("mode", MODES)
def test_fast_path_matches_cudnn_with_dropout_and_batch_first(cuda_path, mode):
    """Training with dropout between layers, batch_first, no biases, float64:
    the fast path against cuDNN (the general path's tolerance)."""
    torch.manual_seed(1101)
    _fast_path(1)
    module = _module(mode, torch.float64, 3, True, True, False, 0)
    x = _input(module)
    h0, c0 = _states(module)
    expected = _run(_reference, module, x, h0, c0, None)
    before = _fast_layers()
    _poison_cuda_cache()
    got = _run(_ours, module, x, h0, c0, None, upstream=expected[2])
    assert _layers_since(before) == (3, 3)
    _compare_runs("fast path vs cuDNN f64", mode, got, expected, *TOLERANCES[torch.float64])
    # Dropout: the same seed gives the same masks on both paths.
    results = []
    for enable in (0, 1):
        _fast_path(enable)
        torch.manual_seed(77)
        results.append(_run(_ours, module, x, h0, c0, None, upstream=expected[2],
                            dropout=0.5))
    _compare_runs("fast vs general path, dropout, f64", mode, results[1], results[0],
                  *TOLERANCES[torch.float64])


@pytest.mark.parametrize("num_layers", [3, 8, 9])
@pytest.mark.parametrize("mode", MODES)
def test_fast_path_wavefront_takes_unidirectional_stacks(cuda_path, mode, num_layers):
    """The stack kernels (the wavefront across the layers, csrc/cuda/
    persistent.cuh) run a unidirectional stack of up to 8 layers in one
    launch each way, inference and training, with lengths, against the
    general path and cuDNN in float64, and with dropout between the layers
    (the same masks as the general path's: the same seed gives the same
    results); 9 layers run layer by layer on the per-layer kernels."""
    torch.manual_seed(1104)
    module = _module(mode, torch.float64, num_layers, False, False, True, 0)
    x = _input(module)
    h0, c0 = _states(module)
    lengths = _lengths(SEQ_LEN, BATCH)
    expected_stacked = num_layers if num_layers <= 8 else 0
    case = f"{mode}-L{num_layers}"
    for train in (False, True):
        stacked = _stacked_layers()
        general, fast, layers = _both_paths(module, x, h0, c0, lengths, train=train)
        assert layers == (num_layers, num_layers if train else 0), f"{case}: {layers} layers"
        assert _stacked_since(stacked) == (expected_stacked, expected_stacked if train else 0), \
            f"{case}: {_stacked_since(stacked)} layers stacked (fwd, bwd)"
        _compare_paths(f"{case}-{'train' if train else 'infer'}", general, fast, torch.float64)
    expected = _run(_reference, module, x, h0, c0, None)
    _fast_path(1)
    got = _run(_ours, module, x, h0, c0, None, upstream=expected[2])
    _compare_runs("stack kernel vs cuDNN f64", case, got, expected, *TOLERANCES[torch.float64])
    # Dropout between layers in training: the driver draws every mask
    # before the launch, in the order the general path draws them.
    results = []
    for enable in (0, 1):
        _fast_path(enable)
        stacked = _stacked_layers()
        torch.manual_seed(78)
        results.append(_run(_ours, module, x, h0, c0, lengths, upstream=expected[2],
                            dropout=0.4))
        assert _stacked_since(stacked) == ((expected_stacked,) * 2 if enable else (0, 0))
    _compare_runs("stack kernel vs general path, dropout, f64", case, results[1], results[0],
                  *TOLERANCES[torch.float64])


def _loop_graphs():
    """(captures, replays) of the CUDA graphs of the general path's time loops
    in this process (csrc/cuda/loop_graphs.h)."""
    captures, replays = torch.ops.deeprnn._cuda_loop_graphs()
    return captures, replays


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_fast_path_graphs_replay_the_general_loop(cuda_path, dtype, with_lengths):
    """Where the persistent kernels do not fit (here LSTM with projection), the
    general path's time loops go through CUDA graphs with the fast-path
    switch on: a loop seen again with the same buffers is captured, then
    replayed. Every call, each on fresh inputs, gives what the switch-off
    path gives on them: a replay computes on the current data, never on the
    data it was captured with."""
    torch.manual_seed(1105)
    module = _module("LSTM", dtype, 2, True, False, True, PROJ_SIZE)
    lengths = _lengths(SEQ_LEN, BATCH) if with_lengths else None
    x = _input(module)
    h0, c0 = _states(module)
    before = _loop_graphs()
    for call in range(6):
        # New values in the same tensors: the same buffers, other numbers.
        with torch.no_grad():
            x.copy_(torch.randn_like(x))
            h0.copy_(torch.randn_like(h0))
            c0.copy_(torch.randn_like(c0))
        general, graphed, layers = _both_paths(module, x, h0, c0, lengths)
        assert layers == (0, 0), "LSTM with projection took the persistent kernels"
        _compare_runs(f"graphs vs eager loop, call {call}", f"LSTM-proj-{DTYPE_IDS[dtype]}",
                      graphed, general, SAME_ROUNDING[dtype], SAME_ROUNDING[dtype])
    captures, replays = (now - then for now, then in zip(_loop_graphs(), before))
    # 2 layers x (forward, backward) = 4 loops a call; each key is captured
    # on its second sight. The allocator may hand a buffer out at another
    # address now and then, but not on every call.
    assert captures >= 4, f"{captures} loops captured in 6 calls"
    assert replays >= 4, f"{replays} loops replayed in 6 calls"


def test_fast_path_inside_a_users_cuda_graph(cuda_path):
    """A caller's own CUDA graph (torch.cuda.graph, or torch.compile's
    reduce-overhead mode) captures our forward: the loops then run into that
    capture, not into graphs of their own, and replays give the eager
    results on new inputs."""
    torch.manual_seed(1106)
    _fast_path(1)
    module = _module("LSTM", torch.float32, 2, False, False, True, PROJ_SIZE)
    static_x = _input(module)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):  # warm-up, as torch.cuda.graph asks
            _ours(module, static_x, None, None)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    before = _loop_graphs()
    with torch.cuda.graph(graph), torch.no_grad():
        static_out = _ours(module, static_x, None, None)
    assert _loop_graphs() == before, "a loop captured a graph inside the caller's capture"
    for _ in range(2):
        new_x = torch.randn_like(static_x)
        static_x.copy_(new_x)
        graph.replay()
        with torch.no_grad():
            expected = _ours(module, new_x, None, None)
        for got, want in zip(static_out, expected):
            torch.testing.assert_close(got, want, **SAME_ROUNDING[torch.float32])


def test_fast_path_falls_back_for_projection(cuda_path):
    torch.manual_seed(1102)
    module = _module("LSTM", torch.float32, 2, True, False, True, PROJ_SIZE)
    x = _input(module)
    h0, c0 = _states(module)
    general, fast, layers = _both_paths(module, x, h0, c0, _lengths(SEQ_LEN, BATCH))
    assert layers == (0, 0), "LSTM with projection took the fast path"
    _compare_runs("fallback vs general path", "LSTM-proj", fast, general, SAME_ROUNDING[
        torch.float32], SAME_ROUNDING[torch.float32])


def _fits(mode, bidirectional, dtype, hidden, backward):
    """Whether one layer of hidden size `hidden` takes the fast path, in
    forward or in backward."""
    module = _module(mode, dtype, 1, bidirectional, False, True, 0, input_size=3,
                     hidden_size=hidden)
    x = _input(module, 2, 2).requires_grad_(backward)
    _fast_path(1)
    before = _fast_layers()
    with torch.set_grad_enabled(backward):
        output = _ours(module, x, None, None)[0]
        if backward:
            torch.autograd.grad(output.sum(), x)
    return _layers_since(before)[1 if backward else 0] == 1


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("mode, bidirectional, dtype",
                         [("LSTM", True, torch.float32), ("GRU", False, torch.bfloat16),
                          ("RNN_TANH", True, torch.float64)],
                         ids=["LSTM-bi-f32", "GRU-uni-bf16", "RNN_TANH-bi-f64"])
def test_fast_path_fit_boundary_both_ways(cuda_path, mode, bidirectional, dtype, backward):
    """The largest hidden size whose forward (backward) fits this GPU, found
    by bisection, takes that pass's fast path, the next one falls back; both
    give the general path's results, forward and backward, with lengths."""
    torch.manual_seed(1103)
    # 4096 is past the boundary of all three on an H100/H200 (about 900,
    # 2000 and 1250 by the geometry chooser's arithmetic) and keeps the
    # largest probe's weights near 0.5 GB.
    low, high = 1, 4096
    assert _fits(mode, bidirectional, dtype, low, backward), "H = 1 does not fit"
    assert not _fits(mode, bidirectional, dtype, high, backward), f"H = {high} fits"
    while high - low > 1:
        middle = (low + high) // 2
        if _fits(mode, bidirectional, dtype, middle, backward):
            low = middle
        else:
            high = middle
    which = "backward" if backward else "forward"
    REPORT.add(f"fit boundary ({which}): largest H of {mode}-"
               f"{'bi' if bidirectional else 'uni'}-{DTYPE_IDS[dtype]}", str(low),
               torch.tensor([float(low)]), torch.tensor([float(low)]))
    for hidden, fits in ((low, True), (high, False)):
        module = _module(mode, dtype, 1, bidirectional, False, True, 0, input_size=16,
                         hidden_size=hidden)
        x = _input(module, 4, 3)
        h0, c0 = _states(module, 3)
        general, fast, layers = _both_paths(module, x, h0, c0, _lengths(4, 3))
        case = f"{mode}-H{hidden}-{DTYPE_IDS[dtype]}"
        ran = layers[1 if backward else 0]
        assert ran == (1 if fits else 0), f"{case}: {which} fast path ran {ran} layers"
        bounds = (2e-2, 5e-2) if dtype == torch.bfloat16 else (1e-5, 1e-4)
        _compare_paths(case, general, fast, dtype, bounds)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("mode", MODES)
def test_fast_path_matches_general_path_large(cuda_path, mode, dtype, with_lengths):
    """T=23, B=67 (several batch tiles), I=65, H=300 (several units per
    block), 2 layers, bidirectional."""
    torch.manual_seed(1104)
    module = _module(mode, dtype, 2, True, False, True, 0, input_size=65, hidden_size=300)
    x = _input(module, 23, 67)
    h0, c0 = _states(module, 67)
    lengths = _lengths(23, 67) if with_lengths else None
    general, fast, layers = _both_paths(module, x, h0, c0, lengths)
    case = f"{mode}-{DTYPE_IDS[dtype]}-{'lengths' if with_lengths else 'full'}"
    if torch.cuda.get_device_properties(0).multi_processor_count >= 100:
        assert layers == (2, 2), f"{case}: the fast path ran {layers} of 2 layers (fwd, bwd)"
    bounds = (1e-5, 1e-4) if dtype == torch.float32 else (2e-2, 5e-2)
    if mode == "RNN_RELU":
        bounds = (bounds[0], max(bounds[1], 1e-2 if dtype == torch.float32 else 0.25))
    _compare_paths(case, general, fast, dtype, bounds)


BENCH_SHAPES = {
    # bench.py's rows that the fast path is meant for: (T, B, H, layers, bidirectional)
    "small-batch": (200, 1, 256, 2, False),
    "stacked-bi": (100, 32, 256, 2, True),
    "deep": (100, 32, 256, 4, False),
}


@pytest.mark.parametrize("row", list(BENCH_SHAPES))
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_fast_path_on_benchmark_shapes_against_cudnn(cuda_path, mode, row):
    """The benchmark rows, float32, forward and backward, against cuDNN; on an
    A100/H100-class GPU (>= 100 multiprocessors) every layer fits."""
    torch.manual_seed(1105)
    seq_len, batch, hidden, layers, bidirectional = BENCH_SHAPES[row]
    module = _module(mode, torch.float32, layers, bidirectional, False, True, 0,
                     input_size=hidden, hidden_size=hidden)
    x = _input(module, seq_len, batch)
    h0, c0 = _states(module, batch)
    expected = _run(_reference, module, x, h0, c0, None)
    _fast_path(1)
    before = _fast_layers()
    _poison_cuda_cache()
    got = _run(_ours, module, x, h0, c0, None, upstream=expected[2])
    ran = _layers_since(before)
    case = f"{mode}-{row}"
    if torch.cuda.get_device_properties(0).multi_processor_count >= 100:
        assert ran == (layers, layers), \
            f"{case}: the fast path ran {ran} of {layers} layers (fwd, bwd)"
    for name, g, e in zip(["output", "hy", "cy"], got[0], expected[0]):
        REPORT.add("fast path vs cuDNN, bench shapes, f32 forward", f"{case} {name}", g, e)
        assert _norm_ratio(g, e) < 1e-5, f"{case}: {name}: {_norm_ratio(g, e):.3e}"
    for name, g, e in zip(got[3], got[1], expected[1]):
        REPORT.add("fast path vs cuDNN, bench shapes, f32 gradients", f"{case} grad of {name}",
                   g, e)
        assert _norm_ratio(g, e) < 1e-4, f"{case}: grad of {name}: {_norm_ratio(g, e):.3e}"
