"""Variable-length batches in the modules: PackedSequence and ``lengths=``.

Reference: torch.nn with the same weights, fed a PackedSequence (sorted and
unsorted). Our module must return the same PackedSequence (data,
batch_sizes, sorted_indices, unsorted_indices), the same h_n/c_n in the
caller's batch order, and the same gradients for the packed data, h0, c0 and
every parameter. The ``lengths=`` path on the padded tensor must give the
same numbers, padded with zeros, and the gradient of the padded input. Then
TorchScript, torch.compile and the errors.
"""

import zlib

import pytest
import torch
import torch._dynamo.testing
from torch.nn.utils.rnn import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
)

from deeprnn_test_utils import MODES, make_pair, random_states

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated"),
]

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE = 6, 5, 3, 4
NAMES = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
# (forward rtol/atol, gradient rtol/atol) per dtype, as in DESIGN.md §5.
TOLERANCES = {
    torch.float64: ((1e-10, 1e-10), (1e-10, 1e-10)),
    torch.float32: ((1e-5, 1e-5), (1e-4, 1e-5)),
}


def _lengths(enforce_sorted, batch=BATCH, steps=SEQ_LEN):
    """Fresh random lengths in 1..steps with both ends present, shuffled
    (or sorted descending when the pack will be enforce_sorted)."""
    lengths = torch.randint(1, steps + 1, (batch,))
    lengths[torch.randperm(batch)[:2]] = torch.tensor([steps, 1])
    if enforce_sorted:
        return lengths.sort(descending=True).values
    if bool((lengths[:-1] >= lengths[1:]).all()):
        lengths = lengths.flip(0)  # make sure the pack has to permute
    return lengths


def _loss(weights, values):
    return sum((w * v).sum() for w, v in zip(weights, values))


def _run(module, mode, x, h0, c0, lengths=None):
    """[output, hy(, cy)] of a module call; output as the module returns it."""
    kwargs = {} if lengths is None else {"lengths": lengths}
    if mode == "LSTM":
        hx = None if h0 is None else (h0, c0)
        output, (hy, cy) = module(x, hx, **kwargs)
        return [output, hy, cy]
    output, hy = module(x, h0, **kwargs)
    return [output, hy]


def _assert_close(got, expected, tolerance, what):
    rtol, atol = tolerance
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def _assert_same_packing(got, expected):
    assert isinstance(got, PackedSequence)
    assert torch.equal(got.batch_sizes, expected.batch_sizes)
    assert got.batch_sizes.dtype == expected.batch_sizes.dtype
    assert got.batch_sizes.device == expected.batch_sizes.device
    for name in ("sorted_indices", "unsorted_indices"):
        g, e = getattr(got, name), getattr(expected, name)
        assert (g is None) == (e is None), name
        if e is not None:
            assert torch.equal(g, e), name


def _check_against_torch(mode, dtype, enforce_sorted, with_hx, **config):
    """PackedSequence and lengths= paths of ours against torch.nn's packed run."""
    reference, ours = make_pair(mode, dtype, input_size=INPUT_SIZE,
                                hidden_size=HIDDEN_SIZE, **config)
    batch_first = config.get("batch_first", False)
    lengths = _lengths(enforce_sorted)
    shape = (BATCH, SEQ_LEN, INPUT_SIZE) if batch_first else (SEQ_LEN, BATCH, INPUT_SIZE)
    # Padding holds random numbers too: nothing may read it.
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    h0, c0 = random_states(mode, BATCH, config.get("num_layers", 1),
                           config.get("bidirectional", False), HIDDEN_SIZE,
                           config.get("proj_size", 0), dtype)
    if not with_hx:
        h0 = c0 = None
    states = [s.requires_grad_() for s in (h0, c0) if s is not None]
    parameters = list(reference.parameters())

    # torch.nn on the PackedSequence, gradients to the packed data and to x.
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first,
                                  enforce_sorted=enforce_sorted)
    expected = _run(reference, mode, packed, h0, c0)
    weights = [torch.randn_like(expected[0].data)] + [torch.randn_like(e) for e in expected[1:]]
    values = [expected[0].data] + expected[1:]
    grads = torch.autograd.grad(_loss(weights, values), [packed.data, x] + states + parameters)
    expected_data_grad, expected_x_grad, expected_grads = grads[0], grads[1], grads[2:]
    (forward_tol, grad_tol) = TOLERANCES[dtype]

    # Ours on the same PackedSequence, with its data as a leaf.
    data = packed.data.detach().requires_grad_()
    ours_packed = PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                                 packed.unsorted_indices)
    got = _run(ours, mode, ours_packed, h0, c0)
    _assert_same_packing(got[0], expected[0])
    got_values = [got[0].data] + got[1:]
    for what, g, e in zip(["output.data", "hy", "cy"], got_values, values):
        _assert_close(g, e, forward_tol, what)
    got_grads = torch.autograd.grad(_loss(weights, got_values),
                                    [data] + states + list(ours.parameters()))
    names = ["input"] + ["h0", "c0"][: len(states)] + [n for n, _ in ours.named_parameters()]
    for name, g, e in zip(names, got_grads, [expected_data_grad] + list(expected_grads)):
        _assert_close(g, e, grad_tol, f"grad {name}")

    # Ours on the padded tensor with lengths=: the padded reference output,
    # zeros past each end, and the gradient of the padded input.
    padded_expected, _ = pad_packed_sequence(expected[0], batch_first=batch_first,
                                             total_length=SEQ_LEN)
    padded_weight, _ = pad_packed_sequence(
        PackedSequence(weights[0], packed.batch_sizes, packed.sorted_indices,
                       packed.unsorted_indices),
        batch_first=batch_first, total_length=SEQ_LEN)
    x_ours = x.detach().clone().requires_grad_()
    got = _run(ours, mode, x_ours, h0, c0, lengths=lengths)
    time_dim = 1 if batch_first else 0
    steps = torch.arange(SEQ_LEN).unsqueeze(1)
    beyond = (steps >= lengths.unsqueeze(0))
    if batch_first:
        beyond = beyond.t()
    assert torch.all(got[0][beyond] == 0), "output past a sequence's end must be zero"
    assert got[0].shape[time_dim] == SEQ_LEN
    for what, g, e in zip(["output", "hy", "cy"], got, [padded_expected] + expected[1:]):
        _assert_close(g, e, forward_tol, f"lengths= {what}")
    got_grads = torch.autograd.grad(_loss([padded_weight] + weights[1:], got),
                                    [x_ours] + states + list(ours.parameters()))
    for name, g, e in zip(names, got_grads, [expected_x_grad] + list(expected_grads)):
        _assert_close(g, e, grad_tol, f"lengths= grad {name}")


def _matrix():
    for mode in MODES:
        for num_layers in (1, 2):
            for bidirectional in (False, True):
                for batch_first in (False, True):
                    config = dict(num_layers=num_layers, bidirectional=bidirectional,
                                  batch_first=batch_first)
                    name = (f"{mode}-L{num_layers}-{'bi' if bidirectional else 'uni'}"
                            f"{'-bf' if batch_first else ''}")
                    yield pytest.param(mode, config, id=name)
    for num_layers in (1, 2):
        for bidirectional in (False, True):
            config = dict(num_layers=num_layers, bidirectional=bidirectional, proj_size=2)
            name = f"LSTM-proj-L{num_layers}-{'bi' if bidirectional else 'uni'}"
            yield pytest.param("LSTM", config, id=name)
    yield pytest.param("GRU", dict(num_layers=2, bidirectional=True, bias=False),
                       id="GRU-nobias-L2-bi")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mode, config", list(_matrix()))
def test_matches_torch_nn(mode, config, dtype):
    """Sorted and unsorted packs, with and without an initial state."""
    torch.manual_seed(zlib.crc32(repr((mode, sorted(config.items()), str(dtype))).encode()))
    for enforce_sorted in (True, False):
        for with_hx in (True, False):
            _check_against_torch(mode, dtype, enforce_sorted, with_hx, **config)


@pytest.mark.parametrize("mode", MODES)
def test_pack_sequence_of_sentences(mode):
    """pack_sequence (a list of tensors, any order), as a user writes it."""
    torch.manual_seed(71)
    reference, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE,
                                num_layers=2, bidirectional=True)
    sequences = [torch.randn(n, INPUT_SIZE, dtype=torch.float64) for n in (2, 7, 4, 7, 1)]
    packed = pack_sequence(sequences, enforce_sorted=False)
    got, expected = _run(ours, mode, packed, None, None), _run(reference, mode, packed, None, None)
    _assert_same_packing(got[0], expected[0])
    for g, e in zip([got[0].data] + got[1:], [expected[0].data] + expected[1:]):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_lengths_path_equals_packed_path(mode):
    """lengths= on the padded tensor gives exactly the unpacked packed run."""
    torch.manual_seed(72)
    _, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=2,
                        bidirectional=True, batch_first=True)
    for enforce_sorted in (True, False):
        lengths = _lengths(enforce_sorted)
        x = torch.randn(BATCH, SEQ_LEN, INPUT_SIZE, dtype=torch.float64)
        h0, c0 = random_states(mode, BATCH, 2, True, HIDDEN_SIZE, 0, torch.float64)
        packed = pack_padded_sequence(x, lengths, batch_first=True,
                                      enforce_sorted=enforce_sorted)
        from_packed = _run(ours, mode, packed, h0, c0)
        padded, _ = pad_packed_sequence(from_packed[0], batch_first=True,
                                        total_length=SEQ_LEN)
        with_lengths = _run(ours, mode, x, h0, c0, lengths=lengths)
        for g, e in zip(with_lengths, [padded] + from_packed[1:]):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_lengths_as_python_list_in_eager(mode):
    torch.manual_seed(73)
    _, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    lengths = _lengths(False)
    expected = _run(ours, mode, x, None, None, lengths=lengths)
    for as_sequence in (lengths.tolist(), tuple(lengths.tolist())):
        got = _run(ours, mode, x, None, None, lengths=as_sequence)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_full_lengths_equal_no_lengths():
    """Every sequence full length: the same as no lengths at all."""
    torch.manual_seed(74)
    _, ours = make_pair("LSTM", input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE,
                        num_layers=2, bidirectional=True)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    full = torch.full((BATCH,), SEQ_LEN, dtype=torch.int64)
    for g, e in zip(_run(ours, "LSTM", x, None, None, lengths=full),
                    _run(ours, "LSTM", x, None, None)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------- TorchScript


class PackedTagger(torch.nn.Module):
    """A user model, scripted, that hands a PackedSequence and lengths on."""

    def __init__(self, mode):
        super().__init__()
        _, self.rnn = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE,
                                num_layers=2, bidirectional=True)

    def forward(self, packed: PackedSequence, x: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        out_packed = self.rnn.forward_packed(packed)[0]
        out_padded = self.rnn(x, None, lengths)[0]
        return out_packed.data.sum() + out_padded.sum()


@pytest.mark.parametrize("mode", MODES)
def test_script_matches_eager(mode, tmp_path):
    torch.manual_seed(75)
    _, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=2,
                        bidirectional=True)
    scripted = torch.jit.script(ours)
    path = tmp_path / "module.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    lengths = _lengths(False)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    h0, c0 = random_states(mode, BATCH, 2, True, HIDDEN_SIZE, 0, torch.float64)
    hx = (h0, c0) if mode == "LSTM" else h0
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    expected_packed = ours(packed, hx)
    expected_padded = ours(x, hx, lengths=lengths)
    for module in (scripted, loaded):
        got = module.forward_packed(packed, hx)
        # TorchScript hands back its own namedtuple type, field for field.
        assert list(got[0]._fields) == list(PackedSequence._fields)
        got_leaves = torch.utils._pytree.tree_leaves(tuple(got[0]) + tuple(got[1:]))
        want_leaves = torch.utils._pytree.tree_leaves(tuple(expected_packed[0])
                                                      + tuple(expected_packed[1:]))
        assert len(got_leaves) == len(want_leaves)
        for g, e in zip(got_leaves, want_leaves):
            torch.testing.assert_close(g, e, rtol=0, atol=0)
        got = torch.utils._pytree.tree_leaves(module(x, hx, lengths))
        for g, e in zip(got, torch.utils._pytree.tree_leaves(expected_padded)):
            torch.testing.assert_close(g, e, rtol=0, atol=0)
        with pytest.raises(Exception, match=rf"deeprnn\.{NAMES[mode]}: lengths needs batched"):
            module(x[:, 0], None, lengths[:1])
    # Eager forward_packed is the eager forward on a PackedSequence.
    for g, e in zip(torch.utils._pytree.tree_leaves(ours.forward_packed(packed, hx)),
                    torch.utils._pytree.tree_leaves(expected_packed)):
        torch.testing.assert_close(g, e, rtol=0, atol=0)

    # Inside a scripted user model; gradients flow.
    model = PackedTagger(mode)
    model.rnn.load_state_dict(ours.state_dict())
    scripted_model = torch.jit.script(model)
    data = packed.data.clone().requires_grad_()
    packed_leaf = PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                                 packed.unsorted_indices)
    got = scripted_model(packed_leaf, x, lengths)
    expected = model(packed_leaf, x, lengths)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    (grad_got,) = torch.autograd.grad(got, data)
    (grad_expected,) = torch.autograd.grad(expected, data)
    torch.testing.assert_close(grad_got, grad_expected, rtol=0, atol=0)


# ----------------------------------------------------------- torch.compile


@pytest.mark.parametrize("mode", MODES)
def test_compile_fullgraph_with_lengths_matches_eager(mode):
    """One graph; new lengths values (and new sizes) reuse it."""
    torch._dynamo.reset()
    torch.manual_seed(76)
    _, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=2,
                        bidirectional=True, batch_first=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(ours, backend=counter, fullgraph=True, dynamic=True)
    parameters = list(ours.parameters())
    compiles = []
    for batch, steps in [(5, 6), (3, 9), (4, 2)]:
        x = torch.randn(batch, steps, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
        lengths = _lengths(False, batch, steps)
        got = torch.utils._pytree.tree_leaves(compiled(x, None, lengths))
        expected = torch.utils._pytree.tree_leaves(ours(x, None, lengths))
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
        weights = [torch.randn_like(e) for e in expected]
        for g, e in zip(torch.autograd.grad(_loss(weights, got), [x] + parameters),
                        torch.autograd.grad(_loss(weights, expected), [x] + parameters)):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
        # Without lengths, the same compiled module still matches eager.
        got = torch.utils._pytree.tree_leaves(compiled(x))
        for g, e in zip(got, torch.utils._pytree.tree_leaves(ours(x))):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
        compiles.append(counter.frame_count)
    # Graphs for the first sizes (with and without lengths); new sizes and
    # new lengths values reuse them.
    assert compiles[1:] == [compiles[0]] * 2, compiles


def test_compile_inductor_with_lengths():
    torch._dynamo.reset()
    torch.manual_seed(77)
    _, ours = make_pair("LSTM", input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE,
                        bidirectional=True)
    compiled = torch.compile(ours, fullgraph=True)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
    lengths = _lengths(False)
    got = torch.utils._pytree.tree_leaves(compiled(x, lengths=lengths))
    expected = torch.utils._pytree.tree_leaves(ours(x, lengths=lengths))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    (grad_got,) = torch.autograd.grad(got[0].sum() + got[1].sum(), x)
    (grad_expected,) = torch.autograd.grad(expected[0].sum() + expected[1].sum(), x)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ errors


def _module_and_input(mode, dtype=torch.float64):
    torch.manual_seed(78)
    reference, ours = make_pair(mode, dtype, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=dtype)
    return reference, ours, x


@pytest.mark.parametrize("mode", MODES)
def test_lengths_with_unbatched_input_is_refused(mode):
    _, ours, x = _module_and_input(mode)
    with pytest.raises(ValueError, match=rf"^deeprnn\.{NAMES[mode]}: lengths needs batched "
                                         r"3-D input, got unbatched 2-D input"):
        ours(x[:, 0], lengths=torch.tensor([SEQ_LEN]))


@pytest.mark.parametrize("mode", MODES)
def test_lengths_with_packed_sequence_is_refused(mode):
    _, ours, x = _module_and_input(mode)
    lengths = _lengths(False)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    with pytest.raises(ValueError, match=rf"^deeprnn\.{NAMES[mode]}: lengths must be None "
                                         r"for PackedSequence input"):
        ours(packed, lengths=lengths)


@pytest.mark.parametrize("lengths, message", [
    ([2.0, 3.0, 1.0, 6.0, 4.0], "got a list holding float"),
    ((True, 2, 3, 4, 5), "got a tuple holding bool"),
    ("12345", "got str"),
])
def test_lengths_of_a_wrong_type_are_refused(lengths, message):
    _, ours, x = _module_and_input("GRU")
    with pytest.raises(TypeError, match=rf"^deeprnn\.GRU: lengths must be an int64 tensor or "
                                        rf"a list of ints, {message}"):
        ours(x, lengths=lengths)


@pytest.mark.parametrize("mode", MODES)
def test_bad_lengths_values_reach_the_operator_check(mode):
    _, ours, x = _module_and_input(mode)
    op = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}[mode]
    for lengths in ([0, 1, 2, 3, 4], [SEQ_LEN + 1, 1, 2, 3, 4], [1, 2, 3]):
        with pytest.raises(RuntimeError, match=rf"^deeprnn\.{op}: lengths"):
            ours(x, lengths=torch.tensor(lengths))


@pytest.mark.parametrize("mode", MODES)
def test_packed_errors_match_torch_nn(mode):
    """The checks on a PackedSequence and its hx say what torch.nn says.

    torch.nn.LSTM skips its argument checks for a PackedSequence (the error
    then comes from deep inside, e.g. a matmul); ours checks it as torch.nn
    checks a padded tensor, so for LSTM the reference is that message.
    """
    reference, ours, x = _module_and_input(mode)
    lengths = _lengths(True)
    packed = pack_padded_sequence(x, lengths)
    rows = 1
    bad_cases = [
        # Wrong feature size.
        (pack_padded_sequence(torch.randn(SEQ_LEN, BATCH, INPUT_SIZE + 1,
                                          dtype=torch.float64), lengths), None),
        # Wrong dtype.
        (pack_padded_sequence(x.float(), lengths), None),
        # hx for another batch size (sorted pack: no permutation first).
        (packed, torch.randn(rows, BATCH - 1, HIDDEN_SIZE, dtype=torch.float64)),
        # hx of another hidden size.
        (packed, torch.randn(rows, BATCH, HIDDEN_SIZE + 1, dtype=torch.float64)),
    ]
    for case, h0 in bad_cases:
        hx = h0
        if mode == "LSTM" and h0 is not None:
            hx = (h0, torch.randn(rows, h0.size(1), HIDDEN_SIZE, dtype=torch.float64))
        with pytest.raises(Exception) as expected:
            reference(pad_packed_sequence(case)[0] if mode == "LSTM" else case, hx)
        with pytest.raises(type(expected.value)) as got:
            ours(case, hx)
        assert str(got.value) == str(expected.value)
