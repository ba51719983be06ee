"""torch.compile and torch.export of models that hold deeprnn modules.

torch.nn's RNNs break the graph under torch.compile; ours must compile with
``fullgraph=True``, match eager in outputs and gradients, and take new
sequence lengths and batch sizes without a recompile per value (the Meta
kernels keep T and B symbolic). torch.export must give a program that runs at
other sizes and matches eager (AOTInductor packages are tested, from Python
and from C++, in test_deploy.py).
"""

import pytest
import torch
import torch._dynamo.testing
from torch.export import Dim

import deeprnn
from deeprnn_test_utils import MODES, call, cuda_skip_reason, make_pair

INPUT_SIZE, HIDDEN_SIZE = 4, 6

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(cuda_skip_reason() is not None,
                                 reason=str(cuda_skip_reason())),
    ),
]


class Tagger(torch.nn.Module):
    """A user model: a bidirectional LSTM, a GRU over it and a linear head."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        self.lstm = deeprnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True,
                                 batch_first=True, proj_size=3, dtype=dtype)
        self.gru = deeprnn.GRU(6, HIDDEN_SIZE, batch_first=True, dtype=dtype)
        self.head = torch.nn.Linear(HIDDEN_SIZE, 2, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, (h, c) = self.lstm(x)
        y, h1 = self.gru(y)
        return self.head(y) + h.sum(0).mean(-1, keepdim=True).unsqueeze(1) + h1[0].mean()


def _module(mode, device, **kwargs):
    torch.manual_seed(51)
    _, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, **kwargs)
    return ours.to(device)


def _assert_graphs_equal_eager(compiled, eager, mode, x, tol):
    """Outputs and the gradients of the input and of every parameter."""
    got = call(compiled, mode, x)
    expected = call(eager, mode, x)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol)
    # A loss that reaches every output, so every backward path runs.
    weights = [torch.randn_like(e) for e in expected]
    params = list(eager.parameters())
    grads_got = torch.autograd.grad(sum((g * w).sum() for g, w in zip(got, weights)),
                                    [x] + params)
    grads_expected = torch.autograd.grad(
        sum((e * w).sum() for e, w in zip(expected, weights)), [x] + params)
    for g, e in zip(grads_got, grads_expected):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_compile_fullgraph_inductor(mode, device):
    """Inductor (the default backend) around our operators: one graph."""
    torch._dynamo.reset()
    ours = _module(mode, device, num_layers=2, bidirectional=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(ours, backend=counter, fullgraph=True)
    x = torch.randn(5, 3, INPUT_SIZE, dtype=torch.float64, device=device,
                    requires_grad=True)
    _assert_graphs_equal_eager(compiled, ours, mode, x, 1e-10)
    assert counter.frame_count == 1


@pytest.mark.parametrize("mode", MODES)
def test_compile_dynamic_lengths_and_batches_compile_once(mode):
    """dynamic=True: new T and B reuse the one graph, forward and backward."""
    torch._dynamo.reset()
    ours = _module(mode, "cpu", num_layers=2, bidirectional=True, batch_first=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(ours, backend=counter, fullgraph=True, dynamic=True)
    compiles = []
    for batch, steps in [(3, 5), (4, 9), (2, 17), (7, 2)]:
        x = torch.randn(batch, steps, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
        _assert_graphs_equal_eager(compiled, ours, mode, x, 1e-12)
        compiles.append(counter.frame_count)
    # The first call may take two attempts (dynamo restarts once to
    # specialise the module's float `dropout`); after it, nothing compiles.
    assert compiles[0] >= 1 and compiles[1:] == [compiles[0]] * 3, compiles


@pytest.mark.parametrize("mode", MODES)
def test_compile_marked_dynamic_compiles_once(mode):
    """mark_dynamic on B and T: exactly one compile, then every size fits."""
    torch._dynamo.reset()
    ours = _module(mode, "cpu", num_layers=2, bidirectional=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(ours, backend=counter, fullgraph=True)
    for steps, batch in [(5, 3), (9, 4), (17, 2)]:
        x = torch.randn(steps, batch, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
        torch._dynamo.mark_dynamic(x, 0)
        torch._dynamo.mark_dynamic(x, 1)
        _assert_graphs_equal_eager(compiled, ours, mode, x, 1e-12)
    assert counter.frame_count == 1, f"{counter.frame_count} compiles"


def test_compile_automatic_dynamic_recompiles_once():
    """The default (automatic dynamic): one recompile, then every length fits."""
    torch._dynamo.reset()
    model = Tagger()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for steps in [5, 8, 13, 21, 34]:
        x = torch.randn(3, steps, INPUT_SIZE, dtype=torch.float64)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-12, atol=1e-12)
    assert counter.frame_count == 2, f"{counter.frame_count} compiles for 5 lengths"


def test_compile_user_model_inductor_training_step():
    """A whole training step of a user model, compiled, equals eager."""
    torch._dynamo.reset()
    torch.manual_seed(52)
    eager = Tagger()
    compiled_model = Tagger()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, fullgraph=True, dynamic=True)
    for model, run in ((eager, eager), (compiled_model, compiled)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(53)
        for steps in (6, 9):
            optimizer.zero_grad()
            loss = run(torch.randn(4, steps, INPUT_SIZE, dtype=torch.float64)).square().mean()
            loss.backward()
            optimizer.step()
    for (name, got), expected in zip(compiled_model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg=name)


def _export_tagger(model):
    batch, steps = Dim("batch", min=2, max=4096), Dim("steps", min=2, max=100_000)
    x = torch.randn(3, 5, INPUT_SIZE, dtype=torch.float64)
    return torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch, 1: steps}})


def test_export_matches_eager_at_other_sizes(tmp_path):
    torch.manual_seed(54)
    model = Tagger().eval()
    program = _export_tagger(model)
    graph = str(program.graph)
    assert "deeprnn.lstm.default" in graph and "deeprnn.gru.default" in graph
    path = tmp_path / "tagger.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    for batch, steps in [(3, 5), (2, 11), (6, 3)]:
        x = torch.randn(batch, steps, INPUT_SIZE, dtype=torch.float64)
        expected = model(x)
        torch.testing.assert_close(program.module()(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_export_each_mode_with_initial_state(mode):
    """Every public operator exports, with its initial state as an input."""
    ours = _module(mode, "cpu", num_layers=2, bidirectional=True).eval()
    batch = Dim("batch", min=2, max=4096)
    steps = Dim("steps", min=2, max=100_000)
    rows = 4
    x = torch.randn(5, 3, INPUT_SIZE, dtype=torch.float64)
    h0 = torch.randn(rows, 3, HIDDEN_SIZE, dtype=torch.float64)
    if mode == "LSTM":
        state = (h0, torch.randn_like(h0))
        state_shapes = ({1: batch}, {1: batch})
    else:
        state, state_shapes = h0, {1: batch}
    program = torch.export.export(ours, (x, state),
                                  dynamic_shapes=({0: steps, 1: batch}, state_shapes))
    for b, t in [(3, 5), (5, 2), (2, 8)]:
        x = torch.randn(t, b, INPUT_SIZE, dtype=torch.float64)
        h0 = torch.randn(rows, b, HIDDEN_SIZE, dtype=torch.float64)
        state = (h0, torch.randn_like(h0)) if mode == "LSTM" else h0
        got = torch.utils._pytree.tree_leaves(program.module()(x, state))
        expected = torch.utils._pytree.tree_leaves(ours(x, state))
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_compile_training_with_dropout_matches_eager_rng():
    """Dropout masks come from torch's generator in the compiled graph too."""
    torch._dynamo.reset()
    ours = _module("LSTM", "cpu", num_layers=3, bidirectional=True, dropout=0.4)
    compiled = torch.compile(ours, fullgraph=True)
    x = torch.randn(6, 3, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(56)
    got = call(compiled, "LSTM", x)
    (grad_got,) = torch.autograd.grad(got[0].sum(), x)
    torch.manual_seed(56)
    expected = call(ours, "LSTM", x)
    (grad_expected,) = torch.autograd.grad(expected[0].sum(), x)
    for g, e in zip(got + [grad_got], expected + [grad_expected]):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    # A second draw differs: the masks are not baked into the graph.
    again = call(compiled, "LSTM", x)[0]
    assert not torch.equal(again, got[0])


@pytest.mark.parametrize("mode", MODES)
def test_compile_under_autocast_matches_eager(mode):
    """The Autocast kernels run inside a compiled graph as they do in eager."""
    torch._dynamo.reset()
    ours = _module(mode, "cpu", num_layers=2, dtype=torch.float32)
    compiled = torch.compile(ours, fullgraph=True)
    x = torch.randn(5, 3, INPUT_SIZE, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = call(compiled, mode, x)
        expected = call(ours, mode, x)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    grads_got = torch.autograd.grad(got[0].float().sum(), [x] + list(ours.parameters()))
    grads_expected = torch.autograd.grad(expected[0].float().sum(),
                                         [x] + list(ours.parameters()))
    for g, e in zip(grads_got, grads_expected):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, e, rtol=0, atol=0)
