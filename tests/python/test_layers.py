"""Per-layer sizes, merge modes and return_sequences in deeprnn.RNN/GRU/LSTM.

The reference is what a user builds by hand with torch.nn: one single-layer
torch.nn module per layer (bidirectional as configured) holding the same
weights, the two directions merged by hand between layers; with lengths,
each layer runs on ``pack_padded_sequence(enforce_sorted=False)`` of the
previous merged output and is unpacked again before the merge.
"""

import copy
import io
import os
import pickle
import zlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import deeprnn
from deeprnn.modules import PerLayerGRU, PerLayerLSTM, PerLayerRNN
from deeprnn_test_utils import classes, module_kwargs

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated"),
]

T, B, IN = 5, 3, 4
MODES = ["LSTM", "GRU", "RNN_TANH"]
MERGES = ["uni", "concat", "sum", "mul", "ave"]  # "uni": unidirectional
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-4)}  # (outputs, grads)

# (hidden sizes, proj sizes) per layer. "per_layer" differs between layers
# (list states, PerLayer* classes; the LSTM mixes a projected layer with an
# unprojected one); "uniform" is a list of equal sizes (one state tensor).
SIZES = {
    ("LSTM", "per_layer"): ([5, 4], [3, 0]),
    ("LSTM", "uniform"): ([4, 4], [2, 2]),
    ("GRU", "per_layer"): ([5, 3], [0, 0]),
    ("GRU", "uniform"): ([4, 4], [0, 0]),
    ("RNN_TANH", "per_layer"): ([5, 3], [0, 0]),
    ("RNN_TANH", "uniform"): ([4, 4], [0, 0]),
}


def _options(mode, hidden, proj, merge, **extra):
    """Constructor keywords of our module."""
    kwargs = dict(input_size=IN, hidden_size=list(hidden), num_layers=len(hidden),
                  bidirectional=merge != "uni", **extra)
    if merge not in ("uni", "concat"):
        kwargs["merge_mode"] = merge
    if mode == "LSTM" and any(proj):
        kwargs["proj_size"] = list(proj)
    return module_kwargs(mode, **kwargs)


def _out_sizes(hidden, proj):
    return [p if p else h for h, p in zip(hidden, proj)]


def _reference_layers(mode, ours, hidden, proj, merge, bias, dtype, batch_first=False):
    """Single-layer torch.nn modules holding our weights, one per layer."""
    torch_cls, _ = classes(mode)
    directions = 1 if merge == "uni" else 2
    outs = _out_sizes(hidden, proj)
    layers = []
    for layer, (h, p) in enumerate(zip(hidden, proj)):
        if layer == 0:
            width = IN
        else:
            width = outs[layer - 1] * (directions if merge in ("uni", "concat") else 1)
        kwargs = module_kwargs(mode, input_size=width, hidden_size=h, num_layers=1,
                               bias=bias, bidirectional=directions == 2, proj_size=p,
                               batch_first=batch_first)
        module = torch_cls(**kwargs, dtype=dtype)
        with torch.no_grad():
            for name, param in module.named_parameters():
                mine = getattr(ours, name.replace("_l0", f"_l{layer}"))
                assert mine.shape == param.shape, name
                param.copy_(mine)
        layers.append(module)
    return layers


def _merge(y, size, merge):
    if merge in ("uni", "concat"):
        return y
    forward, reverse = y[..., :size], y[..., size:]
    if merge == "sum":
        return forward + reverse
    if merge == "mul":
        return forward * reverse
    return (forward + reverse) / 2


def _reference(mode, layers, x, h0s, c0s, lengths, batch_first, merge, outs,
               return_sequences, dropout=0.0):
    """The hand-built stack: (output, per-layer h_n, per-layer c_n)."""
    y = x
    hys, cys = [], []
    for layer, module in enumerate(layers):
        state = None
        if h0s is not None:
            state = (h0s[layer], c0s[layer]) if mode == "LSTM" else h0s[layer]
        if lengths is None:
            raw, final = module(y, state)
        else:
            packed = pack_padded_sequence(y, lengths, batch_first=batch_first,
                                          enforce_sorted=False)
            out, final = module(packed, state)
            raw, _ = pad_packed_sequence(out, batch_first=batch_first,
                                         total_length=x.size(1 if batch_first else 0))
        h, c = final if mode == "LSTM" else (final, None)
        hys.append(h)
        cys.append(c)
        y = _merge(raw, outs[layer], merge)
        if layer < len(layers) - 1 and dropout > 0:
            y = torch.nn.functional.dropout(y, dropout, True)
    if not return_sequences:
        # The last step, read off the last layer's unmerged output: the
        # forward half at each sequence's last valid step, the reverse half
        # at step 0 (its state after reading the whole sequence); merged.
        raw = raw if batch_first else raw.transpose(0, 1)
        steps = lengths if lengths is not None else torch.full((raw.size(0),), raw.size(1))
        size = outs[-1]
        forward = raw[torch.arange(raw.size(0)), steps - 1, :size]
        if merge == "uni":
            y = forward
        else:
            y = _merge(torch.cat([forward, raw[:, 0, size:]], -1), size, merge)
    return y, hys, cys


def _as_layers(state, directions, per_layer):
    """Our state (a list, or one (L*D, B, P) tensor) as per-layer tensors."""
    return list(state) if per_layer else list(state.split(directions))


CASES = [
    pytest.param(mode, merge, sizes, rs, with_lengths, dtype,
                 id=f"{mode}-{merge}-{sizes}-{'seq' if rs else 'last'}-"
                    f"{'lengths' if with_lengths else 'full'}-{str(dtype)[6:]}")
    for mode in MODES for merge in MERGES for sizes in ("per_layer", "uniform")
    for rs in (True, False) for with_lengths in (False, True)
    for dtype in (torch.float64, torch.float32)
    # float32 with per-layer sizes only: the same kernels, fewer cases.
    if dtype == torch.float64 or sizes == "per_layer"
]


@pytest.mark.parametrize("mode, merge, sizes, return_sequences, with_lengths, dtype", CASES)
def test_matches_hand_built_torch_nn_stack(mode, merge, sizes, return_sequences,
                                           with_lengths, dtype):
    """Outputs, states and all gradients equal those of the hand-built stack."""
    torch.manual_seed(zlib.crc32(repr((mode, merge, sizes, return_sequences, with_lengths,
                                       str(dtype))).encode()))
    hidden, proj = SIZES[(mode, sizes)]
    # Vary the other options over the cases without multiplying them.
    batch_first = merge in ("sum", "mul")
    bias = not (merge == "ave" and mode == "GRU")
    given = merge == "uni" or return_sequences != with_lengths
    per_layer = sizes == "per_layer"
    directions = 1 if merge == "uni" else 2
    outs = _out_sizes(hidden, proj)

    _, our_cls = classes(mode)
    ours = our_cls(**_options(mode, hidden, proj, merge, batch_first=batch_first,
                              bias=bias, return_sequences=return_sequences), dtype=dtype)
    assert isinstance(ours, (PerLayerLSTM, PerLayerGRU, PerLayerRNN)) == per_layer
    layers = _reference_layers(mode, ours, hidden, proj, merge, bias, dtype, batch_first)

    x = torch.randn((B, T, IN) if batch_first else (T, B, IN), dtype=dtype,
                    requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,)) if with_lengths else None
    h0s = c0s = None
    if given:
        h0s = [torch.randn(directions, B, o, dtype=dtype, requires_grad=True) for o in outs]
        if mode == "LSTM":
            c0s = [torch.randn(directions, B, h, dtype=dtype, requires_grad=True)
                   for h in hidden]

    # Ours: list states as they are, uniform ones joined into one tensor.
    state = None
    if given:
        hx = h0s if per_layer else torch.cat(h0s)
        cx = (c0s if per_layer else torch.cat(c0s)) if mode == "LSTM" else None
        state = (hx, cx) if mode == "LSTM" else hx
    output, final = ours(x, state, lengths)
    hy, cy = final if mode == "LSTM" else (final, None)
    got = [output] + _as_layers(hy, directions, per_layer)
    if mode == "LSTM":
        got += _as_layers(cy, directions, per_layer)

    ref_out, ref_h, ref_c = _reference(mode, layers, x, h0s, c0s, lengths, batch_first,
                                       merge, outs, return_sequences)
    expected = [ref_out] + ref_h + (ref_c if mode == "LSTM" else [])
    assert len(got) == len(expected)
    rtol, grad_tol = TOL[dtype]
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=rtol, atol=rtol)

    # One loss reaching every output; the gradients of the input, of every
    # layer's initial state and of every parameter.
    weights = [torch.randn_like(e) for e in expected]
    leaves = [x] + (h0s or []) + (c0s or [])
    our_params = [p for _, p in ours.named_parameters()]
    ref_params = []
    for name, _ in ours.named_parameters():
        _, _, rest = name.partition("_l")
        layer = int(rest.split("_")[0])
        ref_params.append(getattr(layers[layer], name.replace(f"_l{layer}", "_l0")))
    grads = torch.autograd.grad(sum((g * w).sum() for g, w in zip(got, weights)),
                                leaves + our_params, allow_unused=False)
    ref_grads = torch.autograd.grad(sum((e * w).sum() for e, w in zip(expected, weights)),
                                    leaves + ref_params, allow_unused=False)
    names = ["input"] + [f"h0[{i}]" for i in range(len(h0s or []))] + \
        [f"c0[{i}]" for i in range(len(c0s or []))] + [n for n, _ in ours.named_parameters()]
    for name, g, e in zip(names, grads, ref_grads):
        torch.testing.assert_close(g, e, rtol=grad_tol, atol=grad_tol, msg=name)


def test_three_layers_with_per_layer_projection_and_lengths():
    """A deeper LSTM stack, projection only in the middle layer, bi concat."""
    torch.manual_seed(7)
    hidden, proj = [6, 5, 3], [0, 2, 0]
    ours = deeprnn.LSTM(IN, hidden, num_layers=3, bidirectional=True, proj_size=proj,
                        dtype=torch.float64)
    assert ours.hidden_size == hidden and ours.proj_size == proj
    layers = _reference_layers("LSTM", ours, hidden, proj, "concat", True, torch.float64)
    x = torch.randn(T, B, IN, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, T, 4])
    output, (hy, cy) = ours(x, lengths=lengths)
    expected, ref_h, ref_c = _reference("LSTM", layers, x, None, None, lengths, False,
                                        "concat", _out_sizes(hidden, proj), True)
    assert [h.shape[-1] for h in hy] == [6, 2, 3] and [c.shape[-1] for c in cy] == hidden
    for g, e in zip([output] + hy + cy, [expected] + ref_h + ref_c):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
    (grad,) = torch.autograd.grad(output.sum(), x)
    (ref_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------- equal sizes as a list


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_uniform_list_is_exactly_the_int_configuration(mode):
    kwargs = dict(input_size=IN, num_layers=2, bidirectional=True, batch_first=True)
    _, our_cls = classes(mode)
    torch.manual_seed(11)
    as_int = our_cls(**module_kwargs(mode, hidden_size=4, proj_size=2, **kwargs),
                     dtype=torch.float64)
    torch.manual_seed(11)
    as_list = our_cls(**module_kwargs(mode, hidden_size=[4, 4], proj_size=[2, 2], **kwargs),
                      dtype=torch.float64)
    assert type(as_list) is type(as_int) is our_cls
    assert as_list.hidden_size == 4 and isinstance(as_list.hidden_size, int)
    assert as_list.proj_size == as_int.proj_size
    assert repr(as_list) == repr(as_int)
    assert as_list._fused and as_int._fused  # the fused operator, as before
    int_state, list_state = as_int.state_dict(), as_list.state_dict()
    assert list(int_state) == list(list_state)
    for name in int_state:
        assert torch.equal(int_state[name], list_state[name]), name
    x = torch.randn(B, T, IN, dtype=torch.float64)
    lengths = torch.tensor([T, 2, 4])
    for a, b in zip(torch.utils._pytree.tree_leaves(as_int(x, None, lengths)),
                    torch.utils._pytree.tree_leaves(as_list(x, None, lengths))):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- gradcheck


def _gradcheck_stack(mode, merge, lengths=None):
    """gradcheck of the module as a function of input, states and parameters."""
    hidden = [8, 5, 3]
    bidirectional = merge != "uni"
    _, our_cls = classes(mode)
    ours = our_cls(**module_kwargs(
        mode, input_size=3, hidden_size=hidden, num_layers=3, bidirectional=bidirectional,
        **({} if merge in ("uni", "concat") else {"merge_mode": merge})),
        dtype=torch.float64)
    directions = 2 if bidirectional else 1
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0s = [torch.randn(directions, 2, h, dtype=torch.float64, requires_grad=True)
           for h in hidden]
    c0s = [torch.randn(directions, 2, h, dtype=torch.float64, requires_grad=True)
           for h in hidden] if mode == "LSTM" else []
    names = [n for n, _ in ours.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in ours.parameters()]
    layers = len(hidden)

    def run(x, *rest):
        hs, cs = list(rest[:layers]), list(rest[layers:layers + len(c0s)])
        weights = dict(zip(names, rest[layers + len(c0s):]))
        state = (hs, cs) if mode == "LSTM" else hs
        output, final = torch.func.functional_call(ours, weights, (x, state, lengths))
        return (output,) + tuple(torch.utils._pytree.tree_leaves(final))

    # fast_mode: one random direction per input, so every parameter is in.
    assert torch.autograd.gradcheck(run, (x, *h0s, *c0s, *params), fast_mode=True)
    # Full Jacobians for the input and the initial states.
    assert torch.autograd.gradcheck(lambda x, *s: run(x, *s, *params), (x, *h0s, *c0s))


@pytest.mark.parametrize("merge", MERGES)
def test_gradcheck_three_layers_8_5_3(merge):
    torch.manual_seed(13)
    _gradcheck_stack("LSTM", merge)


def test_gradcheck_three_layers_8_5_3_with_lengths():
    torch.manual_seed(14)
    _gradcheck_stack("GRU", "sum", lengths=torch.tensor([2, 4]))


# ---------------------------------------------------------------- TorchScript

SCRIPT_CONFIGS = [
    pytest.param("LSTM", dict(hidden_size=[5, 4], proj_size=[3, 0], bidirectional=True,
                              batch_first=True), id="LSTM-per-layer-proj-bi-bf"),
    pytest.param("GRU", dict(hidden_size=[5, 3], return_sequences=False), id="GRU-per-layer-last"),
    pytest.param("RNN_RELU", dict(hidden_size=[3, 5], bidirectional=True, merge_mode="mul"),
                 id="RNN-per-layer-mul"),
    pytest.param("GRU", dict(hidden_size=4, bidirectional=True, merge_mode="sum",
                             return_sequences=False), id="GRU-uniform-sum-last"),
    pytest.param("LSTM", dict(hidden_size=[4, 4], bidirectional=True, merge_mode="ave",
                              batch_first=True), id="LSTM-uniform-ave"),
    pytest.param("LSTM", dict(hidden_size=4, proj_size=2, return_sequences=False),
                 id="LSTM-fused-last"),
    pytest.param("RNN_TANH", dict(hidden_size=[2, 6], bidirectional=True, merge_mode="sum",
                                  return_sequences=False), id="RNN-per-layer-sum-last"),
]


def _states(module, mode, batch, per_layer, dtype=torch.float64):
    """Fresh random initial states of the module's form; batch None: unbatched."""
    directions = 2 if module.bidirectional else 1
    lead = (directions,) if batch is None else (directions, batch)
    hs = [torch.randn(*lead, o, dtype=dtype) for o in module._out_sizes]
    cs = [torch.randn(*lead, h, dtype=dtype) for h in module._hidden_sizes]
    if not per_layer:
        hs, cs = torch.cat(hs), torch.cat(cs)
    return (hs, cs) if mode == "LSTM" else hs


def _same(got, expected):
    got, expected = (torch.utils._pytree.tree_leaves(v) for v in (got, expected))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


@pytest.mark.parametrize("mode, config", SCRIPT_CONFIGS)
def test_scripted_module_matches_eager(mode, config, tmp_path):
    torch.manual_seed(17)
    _, our_cls = classes(mode)
    ours = our_cls(**module_kwargs(mode, input_size=IN, num_layers=2, **config),
                   dtype=torch.float64)
    per_layer = isinstance(ours.hidden_size, list)
    scripted = torch.jit.script(ours)
    batch_first = ours.batch_first
    x = torch.randn((B, T, IN) if batch_first else (T, B, IN), dtype=torch.float64)
    state = _states(ours, mode, B, per_layer)
    lengths = torch.tensor([3, T, 1])
    _same(scripted(x), ours(x))
    _same(scripted(x, state), ours(x, state))
    _same(scripted(x, state, lengths), ours(x, state, lengths))
    one = x[0] if batch_first else x[:, 0]
    unbatched_state = _states(ours, mode, None, per_layer)
    _same(scripted(one, unbatched_state), ours(one, unbatched_state))
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    if ours.return_sequences:
        _same(scripted.forward_packed(packed, state), ours.forward_packed(packed, state))
    else:
        with pytest.raises(Exception, match="forward_packed returns a PackedSequence, which "
                                            "needs return_sequences=True"):
            scripted.forward_packed(packed, state)
    # Gradients through the scripted module.
    xs, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    (g_script,) = torch.autograd.grad(scripted(xs, state, lengths)[0].sum(), xs)
    (g_eager,) = torch.autograd.grad(ours(xe, state, lengths)[0].sum(), xe)
    assert torch.equal(g_script, g_eager)
    # Save and load.
    path = os.path.join(tmp_path, "module.pt")
    torch.jit.save(scripted, path)
    loaded = torch.jit.load(path)
    _same(loaded(x, state, lengths), ours(x, state, lengths))


def test_scripted_signatures():
    """Equal sizes keep torch.nn's forward types; different sizes take lists."""
    def schema(module):
        return str(torch.jit.script(module).forward.schema).split(" self, ", 1)[1]

    tensor_rnn = "Tensor input, Tensor? hx=None, Tensor? lengths=None) -> ((Tensor, Tensor))"
    tensor_lstm = ("Tensor input, (Tensor, Tensor)? hx=None, Tensor? lengths=None) -> "
                   "((Tensor, (Tensor, Tensor)))")
    assert schema(deeprnn.GRU(IN, 4)) == tensor_rnn
    assert schema(deeprnn.RNN(IN, [4, 4], num_layers=2, bidirectional=True,
                              merge_mode="sum", return_sequences=False)) == tensor_rnn
    assert schema(deeprnn.LSTM(IN, 4)) == tensor_lstm
    assert schema(deeprnn.LSTM(IN, [4, 4], num_layers=2, proj_size=[2, 2],
                               return_sequences=False)) == tensor_lstm
    assert schema(deeprnn.GRU(IN, [4, 3], num_layers=2)) == (
        "Tensor input, Tensor[]? hx=None, Tensor? lengths=None) -> ((Tensor, Tensor[]))")
    assert schema(deeprnn.LSTM(IN, [4, 3], num_layers=2)) == (
        "Tensor input, (Tensor[], Tensor[])? hx=None, Tensor? lengths=None) -> "
        "((Tensor, (Tensor[], Tensor[])))")
    # A model holding a per-layer module scripts as a whole.

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = deeprnn.LSTM(IN, [6, 3], num_layers=2, bidirectional=True,
                                    merge_mode="sum", return_sequences=False)
            self.head = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            last, (hs, cs) = self.rnn(x)
            return self.head(last) + hs[-1].sum() + cs[0].mean()

    model = Model()
    x = torch.randn(T, B, IN)
    torch.testing.assert_close(torch.jit.script(model)(x), model(x), rtol=0, atol=0)


# ------------------------------------------------- packed, unbatched, dropout

PACKED_CONFIGS = [
    pytest.param("LSTM", dict(hidden_size=[5, 4], proj_size=[0, 2], bidirectional=True),
                 id="LSTM-per-layer"),
    pytest.param("GRU", dict(hidden_size=[4, 4], bidirectional=True, merge_mode="ave"),
                 id="GRU-uniform-ave"),
    pytest.param("RNN_TANH", dict(hidden_size=[3, 5], bidirectional=True, merge_mode="sum"),
                 id="RNN-per-layer-sum"),
    pytest.param("LSTM", dict(hidden_size=4), id="LSTM-fused"),
]


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("mode, config", PACKED_CONFIGS)
def test_packed_sequence_equals_padded_with_lengths(mode, config, return_sequences):
    """PackedSequence in: as the padded input with lengths, in the caller's order."""
    torch.manual_seed(19)
    _, our_cls = classes(mode)
    ours = our_cls(**module_kwargs(mode, input_size=IN, num_layers=2,
                                   return_sequences=return_sequences, **config),
                   dtype=torch.float64)
    per_layer = isinstance(ours.hidden_size, list)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    lengths = torch.tensor([2, T, 3])
    state = _states(ours, mode, B, per_layer)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_packed, final_packed = ours(packed, state)
    out_padded, final_padded = ours(x, state, lengths)
    _same(final_packed, final_padded)
    if return_sequences:
        unpacked, got_lengths = pad_packed_sequence(out_packed, total_length=T)
        assert torch.equal(got_lengths, lengths)
        assert torch.equal(unpacked, out_padded)
        _same(ours.forward_packed(packed, state), (out_packed, final_packed))
    else:
        # The last step: a plain tensor, each sequence's own, caller's order.
        assert isinstance(out_packed, torch.Tensor)
        assert torch.equal(out_packed, out_padded)
        for b in range(B):
            alone = ours(x[: lengths[b], b: b + 1], _select_batch(state, b, mode))[0]
            torch.testing.assert_close(out_packed[b: b + 1], alone, rtol=1e-12, atol=1e-12)
        with pytest.raises(ValueError, match="needs return_sequences=True"):
            ours.forward_packed(packed, state)


def _select_batch(state, b, mode):
    def pick(s):
        return [t[:, b: b + 1] for t in s] if isinstance(s, list) else s[:, b: b + 1]
    return (pick(state[0]), pick(state[1])) if mode == "LSTM" else pick(state)


@pytest.mark.parametrize("mode, config", SCRIPT_CONFIGS)
def test_unbatched_equals_batch_of_one(mode, config):
    torch.manual_seed(23)
    _, our_cls = classes(mode)
    ours = our_cls(**module_kwargs(mode, input_size=IN, num_layers=2, **config),
                   dtype=torch.float64)
    per_layer = isinstance(ours.hidden_size, list)
    one = torch.randn(T, IN, dtype=torch.float64)
    state = _states(ours, mode, None, per_layer)
    batch_dim = 0 if ours.batch_first else 1
    output, final = ours(one, state)
    batched_state = torch.utils._pytree.tree_map(lambda s: s.unsqueeze(1), state)
    output_b, final_b = ours(one.unsqueeze(batch_dim), batched_state)
    squeeze_dim = batch_dim if ours.return_sequences else 0
    assert torch.equal(output, output_b.squeeze(squeeze_dim))
    _same(final, torch.utils._pytree.tree_map(lambda s: s.squeeze(1), final_b))
    if not ours.return_sequences:
        assert output.dim() == 1
    with pytest.raises(ValueError, match="lengths needs batched 3-D input"):
        ours(one, state, torch.tensor([T]))


@pytest.mark.parametrize("sizes", [[5, 4, 3], [4, 4, 4]], ids=["per_layer", "uniform"])
def test_dropout_between_merged_layers(sizes):
    """Training: dropout on each merged layer output but the last; eval: none."""
    torch.manual_seed(29)
    ours = deeprnn.GRU(IN, sizes, num_layers=3, bidirectional=True, merge_mode="sum",
                       dropout=0.5, dtype=torch.float64)
    layers = _reference_layers("GRU", ours, sizes, [0, 0, 0], "sum", True, torch.float64)
    x = torch.randn(T, B, IN, dtype=torch.float64, requires_grad=True)
    per_layer = sizes[0] != sizes[1]

    torch.manual_seed(31)
    output, hy = ours(x)
    torch.manual_seed(31)
    expected, ref_h, _ = _reference("GRU", layers, x, None, None, None, False, "sum",
                                    sizes, True, dropout=0.5)
    for g, e in zip([output] + _as_layers(hy, 2, per_layer), [expected] + ref_h):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
    (grad,) = torch.autograd.grad(output.sum(), x)
    (ref_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)
    # A second draw differs; the scripted module draws the same masks.
    assert not torch.equal(ours(x)[0], output)
    torch.manual_seed(31)
    assert torch.equal(torch.jit.script(ours)(x)[0], output)

    ours.eval()
    expected, _, _ = _reference("GRU", layers, x, None, None, None, False, "sum", sizes, True)
    torch.testing.assert_close(ours(x)[0], expected, rtol=1e-10, atol=1e-10)


# -------------------------------------------- copies, pickles, state_dicts, repr


def test_per_layer_module_survives_copy_pickle_and_state_dict(tmp_path):
    torch.manual_seed(37)
    ours = deeprnn.LSTM(IN, [5, 3], num_layers=2, proj_size=[2, 0], bidirectional=True,
                        merge_mode="mul", return_sequences=False, dtype=torch.float64)
    assert type(ours) is PerLayerLSTM and isinstance(ours, deeprnn.LSTM)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    expected = ours(x)
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    for other in (copy.copy(ours), copy.deepcopy(ours), pickle.loads(pickle.dumps(ours)),
                  torch.load(buffer, weights_only=False)):
        assert type(other) is PerLayerLSTM
        assert other.hidden_size == [5, 3] and other.proj_size == [2, 0]
        _same(other(x), expected)
    fresh = deeprnn.LSTM(IN, [5, 3], num_layers=2, proj_size=[2, 0], bidirectional=True,
                         merge_mode="mul", return_sequences=False, dtype=torch.float64)
    result = fresh.load_state_dict(ours.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    _same(fresh(x), expected)
    # Per-layer shapes and torch.nn's names; U(-1/sqrt(H_l), 1/sqrt(H_l)).
    assert fresh.weight_ih_l0.shape == (20, IN) and fresh.weight_hr_l0.shape == (2, 5)
    assert fresh.weight_ih_l1.shape == (12, 2) and fresh.weight_hh_l1_reverse.shape == (12, 3)
    assert not hasattr(fresh, "weight_hr_l1")
    for name, param in fresh.named_parameters():
        bound = 1 / (5 if "_l0" in name else 3) ** 0.5
        assert param.abs().max() <= bound, name
    assert fresh.weight_ih_l1.abs().max() > 1 / 5 ** 0.5  # layer 1 uses its own bound
    assert len(fresh._flat_weights) == len(fresh._flat_weights_names) == 18


def test_repr_shows_the_options():
    assert repr(deeprnn.LSTM(3, [3, 2], num_layers=2)) == "LSTM(3, [3, 2], num_layers=2)"
    assert repr(deeprnn.LSTM(3, [5, 4], num_layers=2, proj_size=[2, 0])) == \
        "LSTM(3, [5, 4], proj_size=[2, 0], num_layers=2)"
    assert repr(deeprnn.GRU(3, 4, bidirectional=True, merge_mode="ave",
                            return_sequences=False)) == \
        "GRU(3, 4, bidirectional=True, merge_mode='ave', return_sequences=False)"
    assert repr(deeprnn.RNN(3, [4, 2], num_layers=2, nonlinearity="relu")) == \
        "RNN(3, [4, 2], num_layers=2)"
    assert repr(deeprnn.GRU(3, 4)) == repr(torch.nn.GRU(3, 4))


def test_user_subclasses():
    """A subclass of deeprnn.LSTM keeps tensor states; PerLayerLSTM's take lists."""
    class Mine(deeprnn.LSTM):
        pass

    with pytest.raises(TypeError, match=r"derive it from deeprnn\.modules\.PerLayerLSTM"):
        Mine(IN, [4, 3], num_layers=2)
    assert type(Mine(IN, [4, 4], num_layers=2)) is Mine

    class MinePerLayer(PerLayerLSTM):
        pass

    module = MinePerLayer(IN, [4, 3], num_layers=2)
    output, (hs, cs) = module(torch.randn(T, B, IN))
    assert [h.shape for h in hs] == [(1, B, 4), (1, B, 3)]
    assert type(copy.deepcopy(module)) is MinePerLayer


# ---------------------------------------------------------------- bad options

BAD_OPTIONS = [
    (dict(hidden_size=[], num_layers=2), ValueError,
     r"^deeprnn\.{name}: hidden_size must be an int or a list with one size per layer, "
     r"got an empty list$"),
    (dict(hidden_size=[4, 3, 2], num_layers=2), ValueError,
     r"^deeprnn\.{name}: hidden_size must have one entry per layer \(num_layers=2\), "
     r"got 3: \[4, 3, 2\]$"),
    (dict(hidden_size=[4, 3]), ValueError,
     r"^deeprnn\.{name}: hidden_size must have one entry per layer \(num_layers=1\), "
     r"got 2: \[4, 3\]$"),
    (dict(hidden_size=[4, 0], num_layers=2), ValueError,
     r"^deeprnn\.{name}: hidden_size\[1\] must be a positive int, got 0$"),
    (dict(hidden_size=[-3, 4], num_layers=2), ValueError,
     r"^deeprnn\.{name}: hidden_size\[0\] must be a positive int, got -3$"),
    (dict(hidden_size=[4, 2.0], num_layers=2), TypeError,
     r"^deeprnn\.{name}: hidden_size\[1\] must be an int, got float \(2\.0\)$"),
    (dict(hidden_size=[4, True], num_layers=2), TypeError,
     r"^deeprnn\.{name}: hidden_size\[1\] must be an int, got bool \(True\)$"),
    (dict(hidden_size=4, bidirectional=True, merge_mode="max"), ValueError,
     r"^deeprnn\.{name}: merge_mode must be one of 'concat', 'sum', 'mul', 'ave', "
     r"got 'max'$"),
    (dict(hidden_size=4, bidirectional=True, merge_mode=None), TypeError,
     r"^deeprnn\.{name}: merge_mode must be one of 'concat', 'sum', 'mul', 'ave', "
     r"got NoneType$"),
    (dict(hidden_size=4, merge_mode="sum"), ValueError,
     r"^deeprnn\.{name}: merge_mode='sum' combines the two directions of a layer and "
     r"needs bidirectional=True, got bidirectional=False$"),
    (dict(hidden_size=4, return_sequences=0), TypeError,
     r"^deeprnn\.{name}: return_sequences must be a bool, got int$"),
]

BAD_PROJ = [
    (dict(hidden_size=[4, 3], num_layers=2, proj_size=[2]), ValueError,
     r"^deeprnn\.LSTM: proj_size must have one entry per layer \(num_layers=2\), "
     r"got 1: \[2\]$"),
    (dict(hidden_size=[4, 3], num_layers=2, proj_size=[]), ValueError,
     r"^deeprnn\.LSTM: proj_size must be an int or a list with one size per layer, "
     r"got an empty list$"),
    (dict(hidden_size=[4, 3], num_layers=2, proj_size=[2, 3]), ValueError,
     r"^deeprnn\.LSTM: proj_size\[1\] must be smaller than the layer's hidden size 3 "
     r"\(or 0: no projection\), got 3$"),
    (dict(hidden_size=4, num_layers=2, proj_size=[-1, 2]), ValueError,
     r"^deeprnn\.LSTM: proj_size\[0\] must be an int >= 0 \(0: no projection\), got -1$"),
    (dict(hidden_size=4, num_layers=2, proj_size=[1, "2"]), TypeError,
     r"^deeprnn\.LSTM: proj_size\[1\] must be an int, got str \('2'\)$"),
    (dict(hidden_size=[5, 3], num_layers=2, proj_size=3), ValueError,
     r"^deeprnn\.LSTM: proj_size=3 must be smaller than every layer's hidden size, "
     r"got hidden_size\[1\]=3$"),
]


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
@pytest.mark.parametrize("options, error, message", BAD_OPTIONS)
def test_bad_options_refused(mode, options, error, message):
    _, our_cls = classes(mode)
    name = "RNN" if mode.startswith("RNN") else mode
    with pytest.raises(error, match=message.replace("{name}", name)):
        our_cls(**module_kwargs(mode, input_size=IN, **options))


@pytest.mark.parametrize("options, error, message", BAD_PROJ)
def test_bad_proj_sizes_refused(options, error, message):
    with pytest.raises(error, match=message):
        deeprnn.LSTM(IN, **options)


# ------------------------------------------------------ bad initial state lists


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_bad_initial_state_lists_refused(scripted):
    torch.manual_seed(41)
    lstm = deeprnn.LSTM(IN, [4, 3], num_layers=2, bidirectional=True)
    gru = deeprnn.GRU(IN, [4, 3], num_layers=2)
    if scripted:
        lstm, gru = torch.jit.script(lstm), torch.jit.script(gru)
    error = Exception if scripted else RuntimeError
    x = torch.randn(T, B, IN)
    h = [torch.randn(2, B, 4), torch.randn(2, B, 3)]
    c = [torch.randn(2, B, 4), torch.randn(2, B, 3)]
    with pytest.raises(error, match=r"deeprnn\.LSTM: h_0 must be a list of 2 tensors, "
                                    r"one per layer, got 1"):
        lstm(x, (h[:1], c))
    with pytest.raises(error, match=r"deeprnn\.LSTM: c_0 must be a list of 2 tensors, "
                                    r"one per layer, got 3"):
        lstm(x, (h, c + c[:1]))
    with pytest.raises(error, match=r"deeprnn\.LSTM: h_0\[1\] \(layer 1\) must have size "
                                    r"\[2, 3, 3\] \(directions, batch, features\), "
                                    r"got \[2, 3, 4\]"):
        lstm(x, (h[:1] + h[:1], c))
    with pytest.raises(error, match=r"deeprnn\.LSTM: c_0\[0\] \(layer 0\) must have size "
                                    r"\[2, 3, 4\] \(directions, batch, features\), "
                                    r"got \[1, 3, 4\]"):
        lstm(x, (h, [c[0][:1], c[1]]))
    with pytest.raises(error, match=r"deeprnn\.LSTM: h_0\[0\] \(layer 0\) must have size "
                                    r"\[2, 4\] \(directions, features\), got \[2, 3, 4\]"):
        lstm(x[:, 0], (h, c))  # batched states for an unbatched input
    with pytest.raises(error, match=r"deeprnn\.GRU: hx must be a list of 2 tensors, "
                                    r"one per layer, got 0"):
        gru(x, [])
    with pytest.raises(error, match=r"deeprnn\.GRU: hx\[1\] \(layer 1\) must have size "
                                    r"\[1, 3, 3\] \(directions, batch, features\), "
                                    r"got \[1, 2, 3\]"):
        gru(x, [torch.randn(1, B, 4), torch.randn(1, 2, 3)])
    if not scripted:
        # One tensor where the per-layer list belongs, and an LSTM state that
        # is not a pair: named type errors in eager mode.
        with pytest.raises(TypeError, match=r"deeprnn\.GRU: hx must be a list of 2 "
                                            r"tensors, one per layer .*got Tensor"):
            gru(x, torch.randn(2, B, 4))
        with pytest.raises(TypeError, match=r"deeprnn\.LSTM: hx must be a pair \(h_0, c_0\)"
                                            r" of lists of 2 tensors.*got list of length 4"):
            lstm(x, h + c)
        with pytest.raises(TypeError, match=r"deeprnn\.LSTM: c_0 must be a list of 2 "
                                            r"tensors.*got Tensor"):
            lstm(x, (h, c[0]))


def test_torch_compile_fullgraph_with_list_states():
    """torch.compile takes a per-layer module in one graph, as the others."""
    import torch._dynamo.testing

    torch._dynamo.reset()
    torch.manual_seed(43)
    ours = deeprnn.LSTM(IN, [5, 3], num_layers=2, bidirectional=True, merge_mode="sum",
                        return_sequences=False, dtype=torch.float64)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(ours, backend=counter, fullgraph=True)
    x = torch.randn(T, B, IN, dtype=torch.float64, requires_grad=True)
    state = _states(ours, "LSTM", B, True)
    lengths = torch.tensor([T, 1, 3])
    got = torch.utils._pytree.tree_leaves(compiled(x, state, lengths))
    expected = torch.utils._pytree.tree_leaves(ours(x, state, lengths))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    params = list(ours.parameters())
    grads = torch.autograd.grad(sum(g.sum() for g in got), [x] + params)
    ref_grads = torch.autograd.grad(sum(e.sum() for e in expected), [x] + params)
    for g, e in zip(grads, ref_grads):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert counter.frame_count == 1
