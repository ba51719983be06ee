"""Differential fuzzing of deeprnn against torch.nn: configurations, cases
and the comparison. tests/python/test_fuzz.py runs them under pytest.

A configuration is a plain dict of Python literals (a ``repr`` rebuilds it),
drawn from a seeded generator by :func:`draw_config`. Everything random in a
case (weights, inputs, states, output-gradient weights) comes from
``torch.manual_seed(config["seed"])`` in :func:`build_case`, so the dict
alone reproduces a case on any machine with the same torch version:

    reference, ours, case = build_case(config)
    compare_case(config, reference, ours, case)   # AssertionError on mismatch

``python tests/python/fuzz_configs.py [count] [seed]`` prints how often each
feature occurs among the first ``count`` configurations.
"""

import math
import os
import random
import sys
import warnings

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from deeprnn_test_utils import OP_NAMES, make_pair

DEFAULT_SEED = 20240808
DEFAULT_COUNT = 400

# Input/state layouts: how the tensor handed to the module is laid out in
# memory (the values are fresh random numbers either way).
#   contiguous  plain torch.randn
#   permuted    a permute() of a tensor allocated in another dimension order
#   strided     every 2nd/3rd element of a larger tensor along one dimension,
#               starting at a random offset (storage_offset > 0 often)
#   expanded    stride 0 along one dimension (mostly the batch): expand()
LAYOUTS = ["contiguous", "permuted", "strided", "expanded"]
LAYOUT_WEIGHTS = [4, 2, 2, 2]


def _pick(rng, values, weights=None):
    return rng.choices(values, weights=weights)[0]


def _size(rng, low, high, edge_probability=0.15):
    """A size in low..high: an edge value sometimes, else log-uniform (small
    sizes are where off-by-one bugs live, large ones cost time)."""
    if rng.random() < edge_probability:
        return _pick(rng, [low, high])
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high + 0.5)))))


def draw_config(rng, index):
    """One random configuration (a dict of literals) from ``rng``."""
    mode = _pick(rng, ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
    hidden_size = _size(rng, 1, 64)
    proj_size = 0
    if mode == "LSTM" and hidden_size >= 2 and rng.random() < 0.5:
        proj_size = rng.randint(1, hidden_size - 1)
    num_layers = _pick(rng, [1, 2, 3, 4], [35, 30, 20, 15])
    train = rng.random() < 0.6
    # dropout > 0 in training draws masks from a generator torch.nn uses
    # differently, so it cannot be compared; but torch.nn ignores dropout in
    # eval mode and, in training, after the last (here: only) layer, where
    # deeprnn must ignore it too.
    dropout = 0.0
    if (not train or num_layers == 1) and rng.random() < 0.3:
        dropout = _pick(rng, [0.1, 0.5, 1.0])
    unbatched = rng.random() < 0.08
    # The operator path takes batched input only (unbatched input is a
    # module feature).
    path = "op" if (not unbatched and rng.random() < 0.2) else "module"
    with_state = rng.random() < 0.65
    no_grad = rng.random() < 0.12
    config = {
        "index": index,
        "seed": rng.randrange(2**31),
        "mode": mode,
        "dtype": _pick(rng, ["float32", "float64"]),
        "input_size": _size(rng, 1, 64),
        "hidden_size": hidden_size,
        "proj_size": proj_size,
        "num_layers": num_layers,
        "bidirectional": rng.random() < 0.5,
        "batch_first": rng.random() < 0.5,
        "bias": rng.random() < 0.75,
        "seq_len": _size(rng, 1, 50, edge_probability=0.2),
        "batch": _size(rng, 1, 16),
        "unbatched": unbatched,
        "train": train,
        "dropout": dropout,
        "path": path,
        "x_layout": _pick(rng, LAYOUTS, LAYOUT_WEIGHTS),
        "state": _pick(rng, LAYOUTS, LAYOUT_WEIGHTS) if with_state else None,
        # Parameters replaced by transposed (non-contiguous) views.
        "param_layout": "permuted" if rng.random() < 0.15 else "contiguous",
        # "no_grad": forward only, under torch.no_grad (the inference path,
        # no reserve); else which leaves take part in backward.
        "no_grad": no_grad,
        "x_grad": no_grad or rng.random() < 0.85,
        "state_grad": no_grad or rng.random() < 0.85,
        "param_grad": no_grad or rng.random() < 0.9,
        # Which results the loss reads: all, only the output, only the final
        # states (the others' gradients are then undefined in backward).
        "used": _pick(rng, ["all", "output", "states"], [70, 15, 15]),
        # Layout of the output-gradient weights autograd hands to backward.
        "grad_layout": _pick(rng, ["contiguous", "permuted", "expanded"], [6, 2, 2]),
        # Variable-length sequences (drawn below): a list of B ints in
        # 1..seq_len, any order, or None. torch.nn then runs on
        # pack_padded_sequence(enforce_sorted=False); deeprnn's operator takes
        # the padded input and the lengths, deeprnn's module the same
        # PackedSequence as torch.nn.
        "lengths": None,
        # With lengths: None, or "nan"/"inf" written into every padded input
        # position (which both sides must ignore, in value and in gradient).
        "pad_poison": None,
    }
    # Drawn after everything else, so that the rest of a configuration is
    # what it was before lengths existed.
    if not unbatched and rng.random() < 1 / 3:
        T, B = config["seq_len"], config["batch"]
        kind = _pick(rng, ["any", "short", "full"], [70, 15, 15])
        if kind == "full":
            config["lengths"] = [T] * B
        else:
            # short: no sequence reaches T (trailing all-padding steps).
            high = T - 1 if (kind == "short" and T >= 2) else T
            config["lengths"] = [rng.randint(1, high) for _ in range(B)]
        # An expanded input shares memory between positions: no poisoning.
        if (config["x_layout"] != "expanded" and min(config["lengths"]) < T
                and rng.random() < 0.5):
            config["pad_poison"] = _pick(rng, ["nan", "inf"])
    if not (config["x_grad"] or (config["state_grad"] and with_state) or config["param_grad"]):
        config["param_grad"] = True  # something must take a gradient
    return config


def config_rng(seed, index):
    # One generator per configuration, so that configuration i is the same
    # whatever the count (a long run extends the CI run).
    return random.Random(seed * 1_000_003 + index)


def configs(count=None, seed=None):
    if count is None:
        count = int(os.environ.get("DEEPRNN_FUZZ_CONFIGS", DEFAULT_COUNT))
    if seed is None:
        seed = int(os.environ.get("DEEPRNN_FUZZ_SEED", DEFAULT_SEED))
    return [draw_config(config_rng(seed, i), i) for i in range(count)]


def config_id(config):
    c = config
    parts = [
        f"{c['index']:04d}", c["mode"], f"L{c['num_layers']}",
        "bi" if c["bidirectional"] else "uni", c["dtype"].replace("float", "f"),
    ]
    if c["proj_size"]:
        parts.append(f"proj{c['proj_size']}")
    if c["lengths"] is not None:
        parts.append("len" + ("-poison" if c["pad_poison"] else ""))
    parts.append(c["path"])
    return "-".join(parts)


# ---------------------------------------------------------------- layouts


def make_tensor(shape, layout, dtype, expand_dim, rng):
    """Fresh random values of logical ``shape`` laid out as ``layout``.

    ``rng`` (a random.Random) picks the permutation, step and offset; torch's
    generator draws the values.
    """
    shape = list(shape)
    n = len(shape)
    if layout == "contiguous":
        return torch.randn(shape, dtype=dtype)
    if layout == "permuted":
        order = list(range(n))
        while n > 1 and order == list(range(n)):
            rng.shuffle(order)
        base = torch.randn([shape[d] for d in order], dtype=dtype)
        # base.permute(inverse) has the logical shape with base's memory order.
        inverse = [order.index(d) for d in range(n)]
        return base.permute(inverse)
    if layout == "strided":
        dim = rng.randrange(n)
        step = rng.choice([2, 3])
        offset = rng.randrange(step)
        base_shape = list(shape)
        base_shape[dim] = shape[dim] * step + offset
        base = torch.randn(base_shape, dtype=dtype)
        index = [slice(None)] * n
        index[dim] = slice(offset, offset + shape[dim] * step, step)
        return base[tuple(index)]
    if layout == "expanded":
        dim = expand_dim if rng.random() < 0.7 else rng.randrange(n)
        base_shape = list(shape)
        base_shape[dim] = 1
        return torch.randn(base_shape, dtype=dtype).expand(shape)
    raise ValueError(f"unknown layout {layout!r}")


def result_shapes(config):
    """Shapes of (output, hy[, cy]) for ``config``."""
    c = config
    directions = 2 if c["bidirectional"] else 1
    out = c["proj_size"] or c["hidden_size"]
    rows = c["num_layers"] * directions
    if c["unbatched"]:
        shapes = [(c["seq_len"], directions * out), (rows, out), (rows, c["hidden_size"])]
    else:
        T, B = c["seq_len"], c["batch"]
        output = (B, T, directions * out) if c["batch_first"] else (T, B, directions * out)
        shapes = [output, (rows, B, out), (rows, B, c["hidden_size"])]
    return shapes if c["mode"] == "LSTM" else shapes[:2]


def build_case(config):
    """(torch.nn module, deeprnn module, case dict) for ``config``.

    The case holds the inputs ``x``, ``h0``, ``c0`` (None when absent),
    ``lengths`` (an int64 tensor, or None) and the output-gradient weights
    ``grads`` (one per result).
    """
    c = config
    dtype = getattr(torch, c["dtype"])
    rng = random.Random(c["seed"])
    torch.manual_seed(c["seed"])
    with warnings.catch_warnings():
        # "dropout ... expects num_layers greater than 1" is intended here.
        warnings.simplefilter("ignore")
        reference, ours = make_pair(
            c["mode"], dtype=dtype, input_size=c["input_size"],
            hidden_size=c["hidden_size"], num_layers=c["num_layers"],
            bias=c["bias"], batch_first=c["batch_first"], dropout=c["dropout"],
            bidirectional=c["bidirectional"], proj_size=c["proj_size"])
    reference.train(c["train"])
    ours.train(c["train"])
    if c["param_layout"] == "permuted":
        # Same values, transposed memory: parameters that are views.
        for module in (reference, ours):
            for name in module._flat_weights_names:
                value = getattr(module, name).detach()
                if value.dim() == 2:
                    value = value.t().contiguous().t()
                else:
                    value = torch.stack([value, value], 1)[:, 0]  # stride 2
                setattr(module, name, torch.nn.Parameter(value))
    for module in (reference, ours):
        for p in module.parameters():
            p.requires_grad_(c["param_grad"])

    T, B, I = c["seq_len"], c["batch"], c["input_size"]
    if c["unbatched"]:
        x_shape, x_batch_dim = (T, I), 0  # expanded: stride-0 time steps
    elif c["batch_first"]:
        x_shape, x_batch_dim = (B, T, I), 0
    else:
        x_shape, x_batch_dim = (T, B, I), 1
    x = make_tensor(x_shape, c["x_layout"], dtype, x_batch_dim, rng)
    lengths = None
    if c["lengths"] is not None:
        lengths = torch.tensor(c["lengths"], dtype=torch.int64)
        if c["pad_poison"] is not None:
            # In place through the view: its memory layout stays as drawn.
            padding = torch.arange(T).unsqueeze(1) >= lengths.unsqueeze(0)  # (T, B)
            x[padding.t() if c["batch_first"] else padding] = float(c["pad_poison"])

    shapes = result_shapes(c)
    h0 = c0 = None
    if c["state"] is not None:
        # hx (L*D, B, P), cx (L*D, B, H); unbatched: (L*D, P), (L*D, H).
        state_batch_dim = 0 if c["unbatched"] else 1
        h0 = make_tensor(shapes[1], c["state"], dtype, state_batch_dim, rng)
        if c["mode"] == "LSTM":
            c0 = make_tensor(shapes[2], c["state"], dtype, state_batch_dim, rng)

    grads = []
    for shape in shapes:
        batch_dim = 0 if (c["batch_first"] and len(grads) == 0) else 1
        if c["unbatched"]:
            batch_dim = 0
        grads.append(make_tensor(shape, c["grad_layout"], dtype, batch_dim, rng))

    if not c["no_grad"]:
        if c["x_grad"]:
            x.requires_grad_()
        for state in (h0, c0):
            if state is not None and c["state_grad"]:
                state.requires_grad_()
    return reference, ours, {"x": x, "h0": h0, "c0": c0, "lengths": lengths, "grads": grads}


# ------------------------------------------------------------- comparison


def _run_module(module, mode, x, h0, c0, lengths=None):
    """[output, hy(, cy)]; with lengths, the module runs on
    pack_padded_sequence(enforce_sorted=False) and its output is unpacked to
    the padded layout (zeros past each length)."""
    if lengths is not None:
        seq_len = x.shape[1] if module.batch_first else x.shape[0]
        x = pack_padded_sequence(x, lengths, batch_first=module.batch_first,
                                 enforce_sorted=False)
    if mode == "LSTM":
        output, (hy, cy) = module(x) if h0 is None else module(x, (h0, c0))
        results = [output, hy, cy]
    else:
        output, hy = module(x, h0)
        results = [output, hy]
    if lengths is not None:
        results[0], _ = pad_packed_sequence(results[0], batch_first=module.batch_first,
                                            total_length=seq_len)
    return results


def _run_op(config, module, x, h0, c0, lengths=None):
    """The public operator called directly with the module's parameters."""
    c = config
    params = [getattr(module, name) for name in module._flat_weights_names]
    op = getattr(torch.ops.deeprnn, OP_NAMES[c["mode"]])
    tail = (params, c["bias"], c["num_layers"], c["dropout"], c["train"],
            c["bidirectional"], c["batch_first"])
    if c["mode"] == "LSTM":
        return list(op(x, h0, c0, *tail, lengths=lengths))
    return list(op(x, h0, *tail, lengths=lengths))


def tolerances(config, reference_value):
    """assert_close keywords for one tensor: (forward, gradient).

    float64: rtol = atol = 1e-9. Both sides compute the same sums in a
    different order (one GEMM over all steps against torch.nn's per-step
    products); float64 rounding (2.2e-16 per operation) grows with the
    number of accumulated terms, here at most ~T*B = 800 for a weight
    gradient and ~50 steps of recurrence, a few 1e-13 at worst, so 1e-9
    leaves three orders of margin and still fails on any real bug (a wrong
    gate, step or index errs by 1e-3 or more).

    float32: forward rtol 1e-5, gradients rtol 1e-4, as torch.nn's own
    float32 paths differ from each other by that much in summation order
    (and deeprnn's vectorised float activations are accurate to 2e-7,
    test_numerics.py).

    atol is scaled by the tensor's root-mean-square magnitude (when above 1):
    an element that is a sum with cancellation carries the rounding error of
    its terms, not of its own (small) value, so a fixed atol would flag
    rounding noise on near-zero elements of large-valued tensors (RNN_RELU
    states are unbounded; gradients through 4 layers x 50 steps reach 1e1 to
    1e3). The RMS, not the largest element, so that one large element does
    not loosen the check of the whole tensor.

    Measured (1500 configurations, seed 3): the largest |deeprnn - torch.nn|
    was under 1e-5 of these bounds in float64 (a relative error of ~4e-15)
    and under 5% of them in float32, so they hide nothing a real bug would
    show and still leave room for other BLAS builds and thread counts.
    """
    scale = 1.0
    if reference_value.numel():
        rms = reference_value.detach().double().pow(2).mean().sqrt().item()
        scale = max(1.0, rms)
    if config["dtype"] == "float64":
        tol = dict(rtol=1e-9, atol=1e-9 * scale)
        return tol, tol
    return dict(rtol=1e-5, atol=1e-5 * scale), dict(rtol=1e-4, atol=1e-4 * scale)


def _assert_close(config, name, got, expected, forward):
    assert (got is None) == (expected is None), (
        f"{name}: deeprnn gave {'None' if got is None else 'a tensor'}, "
        f"torch.nn {'None' if expected is None else 'a tensor'}")
    if got is None:
        return
    assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)} != torch.nn {tuple(expected.shape)}"
    assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype} != torch.nn {expected.dtype}"
    tol = tolerances(config, expected)[0 if forward else 1]
    torch.testing.assert_close(
        got, expected, **tol, msg=lambda m: f"{name} differs from torch.nn: {m}")


def compare_case(config, reference, ours, case):
    """Runs both and asserts that results and all gradients match."""
    c = config
    x, h0, c0, lengths = case["x"], case["h0"], case["c0"], case["lengths"]
    mode = c["mode"]

    def run_ours():
        if c["path"] == "op":
            return _run_op(c, ours, x, h0, c0, lengths)
        return _run_module(ours, mode, x, h0, c0, lengths)

    with warnings.catch_warnings():
        # torch.nn's notice that oneDNN has no LSTM projection: not ours.
        warnings.filterwarnings("ignore", "LSTM with projections is not supported")
        with torch.set_grad_enabled(not c["no_grad"]):
            expected = _run_module(reference, mode, x, h0, c0, lengths)
            got = run_ours()
    names = ["output", "h_n", "c_n"]
    for name, g, e in zip(names, got, expected):
        _assert_close(c, name, g, e, forward=True)
    if c["path"] == "op" and lengths is None:
        # (With lengths the module runs on a PackedSequence, in sorted batch
        # order: other rounding, and compared with torch.nn above anyway.)
        # The module is the operator plus argument handling: the same bits,
        # under the same grad mode (the inference path, taken without grad,
        # projects the input in chunks and rounds differently in float32).
        with torch.set_grad_enabled(not c["no_grad"]):
            module_results = _run_module(ours, mode, x, h0, c0)
        for name, g, m in zip(names, got, module_results):
            assert torch.equal(g, m), f"{name}: torch.ops.deeprnn differs from deeprnn module"
    if c["no_grad"]:
        for g in got:
            assert not g.requires_grad
        return

    used = {"all": [0, 1, 2], "output": [0], "states": [1, 2]}[c["used"]]
    used = [i for i in used if i < len(got)]
    leaves, leaf_names_ = [], []
    for name, t in (("input", x), ("h0", h0), ("c0", c0)):
        if t is not None and t.requires_grad:
            leaves.append(t)
            leaf_names_.append(f"grad of {name}")
    param_names = [n for n, p in reference.named_parameters() if p.requires_grad]
    assert param_names == [n for n, p in ours.named_parameters() if p.requires_grad]
    grad_names = leaf_names_ + [f"grad of {n}" for n in param_names]
    ref_params = [p for p in reference.parameters() if p.requires_grad]
    our_params = [p for p in ours.parameters() if p.requires_grad]
    assert leaves or ref_params, "a case without gradients to compare"
    grads = [case["grads"][i] for i in used]
    expected_grads = torch.autograd.grad(
        [expected[i] for i in used], leaves + ref_params, grads, allow_unused=True)
    got_grads = torch.autograd.grad(
        [got[i] for i in used], leaves + our_params, grads, allow_unused=True)
    for name, g, e in zip(grad_names, got_grads, expected_grads):
        _assert_close(c, name, g, e, forward=False)


def check_config(config):
    reference, ours, case = build_case(config)
    compare_case(config, reference, ours, case)


def _dict_lines(config, per_line=4):
    items = [f"{key!r}: {value!r}," for key, value in config.items()]
    return ["    " + " ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]


def reproducer(config):
    """A copy-pasteable Python snippet that reruns ``config``."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    library = os.environ.get("DEEPRNN_LIBRARY", "build/libdeeprnn.so")
    return "\n".join([
        "# deeprnn fuzz reproducer; run it with the environment of the failing run, e.g.",
        f"#   DEEPRNN_LIBRARY={library} ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python",
        "import sys",
        f"sys.path.insert(0, {tests_dir!r})",
        "import conftest  # imports deeprnn (source tree + $DEEPRNN_LIBRARY), as pytest does",
        "from fuzz_configs import build_case, compare_case",
        "import torch",
        "torch.ops.deeprnn._cpu_buffer_cache_poison(1)  # as the fuzz test runs",
        "config = {",
        *_dict_lines(config),
        "}",
        "# torch.nn, deeprnn, {x, h0, c0, lengths, grads}:",
        "reference, ours, case = build_case(config)",
        "compare_case(config, reference, ours, case)  # raises AssertionError on a mismatch",
    ])


# --------------------------------------------------------------- coverage


def feature_counts(config_list):
    """How many configurations have each feature."""
    features = {
        "LSTM": lambda c: c["mode"] == "LSTM",
        "GRU": lambda c: c["mode"] == "GRU",
        "RNN_TANH": lambda c: c["mode"] == "RNN_TANH",
        "RNN_RELU": lambda c: c["mode"] == "RNN_RELU",
        "num_layers>=2": lambda c: c["num_layers"] >= 2,
        "num_layers==4": lambda c: c["num_layers"] == 4,
        "bidirectional": lambda c: c["bidirectional"],
        "batch_first": lambda c: c["batch_first"],
        "no bias": lambda c: not c["bias"],
        "LSTM proj_size>0": lambda c: c["proj_size"] > 0,
        "float64": lambda c: c["dtype"] == "float64",
        "float32": lambda c: c["dtype"] == "float32",
        "input/hidden size 1": lambda c: c["input_size"] == 1 or c["hidden_size"] == 1,
        "seq_len 1": lambda c: c["seq_len"] == 1,
        "batch 1": lambda c: c["batch"] == 1 and not c["unbatched"],
        "unbatched 2-D": lambda c: c["unbatched"],
        "x permuted": lambda c: c["x_layout"] == "permuted",
        "x strided (step slice)": lambda c: c["x_layout"] == "strided",
        "x expanded (stride 0)": lambda c: c["x_layout"] == "expanded",
        "x non-contiguous (any)": lambda c: c["x_layout"] != "contiguous",
        "h0/c0 given": lambda c: c["state"] is not None,
        "h0/c0 non-contiguous": lambda c: c["state"] not in (None, "contiguous"),
        "params non-contiguous": lambda c: c["param_layout"] != "contiguous",
        "train mode": lambda c: c["train"],
        "eval mode": lambda c: not c["train"],
        "dropout>0 (eval, or 1 layer)": lambda c: c["dropout"] > 0,
        "no_grad forward": lambda c: c["no_grad"],
        "input without grad": lambda c: not c["no_grad"] and not c["x_grad"],
        "params frozen": lambda c: not c["no_grad"] and not c["param_grad"],
        "loss on output only": lambda c: not c["no_grad"] and c["used"] == "output",
        "loss on states only": lambda c: not c["no_grad"] and c["used"] == "states",
        "grad_output non-contiguous": lambda c: not c["no_grad"] and c["grad_layout"] != "contiguous",
        "operator path": lambda c: c["path"] == "op",
        "lengths": lambda c: c["lengths"] is not None,
        "lengths, operator path": lambda c: c["lengths"] is not None and c["path"] == "op",
        "lengths, bidirectional": lambda c: c["lengths"] is not None and c["bidirectional"],
        "lengths, num_layers>=2": lambda c: c["lengths"] is not None and c["num_layers"] >= 2,
        "lengths, LSTM proj_size>0": lambda c: c["lengths"] is not None and c["proj_size"] > 0,
        "lengths, max < seq_len": lambda c: c["lengths"] is not None
        and max(c["lengths"]) < c["seq_len"],
        "lengths, all == seq_len": lambda c: c["lengths"] is not None
        and min(c["lengths"]) == c["seq_len"],
        "lengths, unsorted": lambda c: c["lengths"] is not None
        and c["lengths"] != sorted(c["lengths"], reverse=True),
        "lengths, batch 1": lambda c: c["lengths"] is not None and c["batch"] == 1,
        "lengths, x non-contiguous": lambda c: c["lengths"] is not None
        and c["x_layout"] != "contiguous",
        "lengths, no_grad forward": lambda c: c["lengths"] is not None and c["no_grad"],
        "padding NaN/inf": lambda c: c["pad_poison"] is not None,
    }
    return {name: sum(1 for c in config_list if test(c)) for name, test in features.items()}


def coverage_table(config_list):
    n = len(config_list)
    lines = [f"{n} configurations"]
    for name, count in feature_counts(config_list).items():
        lines.append(f"  {name:32s} {count:5d}  {100.0 * count / n:5.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else None
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else None
    print(coverage_table(configs(count, seed)))
