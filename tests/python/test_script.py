"""TorchScript (script, save, load) of the modules.

torch.compile and torch.export are in test_compile_export.py.
"""

import os

import pytest
import torch

import deeprnn
from deeprnn_test_utils import MODES, call, make_pair, random_states

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated"),
]

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE = 5, 3, 4, 6


def _configs():
    for mode in MODES:
        yield pytest.param(mode, dict(), id=f"{mode}-plain")
        yield pytest.param(mode, dict(num_layers=2, bidirectional=True, batch_first=True),
                           id=f"{mode}-bi-bf")
        if mode == "LSTM":
            yield pytest.param(mode, dict(num_layers=2, proj_size=3, bias=False),
                               id=f"{mode}-proj")


def _assert_same(got, expected):
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("mode, config", list(_configs()))
def test_script_module_matches_eager(mode, config, tmp_path):
    torch.manual_seed(41)
    _, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, **config)
    scripted = torch.jit.script(ours)
    batch_first = config.get("batch_first", False)
    shape = (BATCH, SEQ_LEN, INPUT_SIZE) if batch_first else (SEQ_LEN, BATCH, INPUT_SIZE)
    x = torch.randn(shape, dtype=torch.float64)
    layers = config.get("num_layers", 1)
    bidirectional = config.get("bidirectional", False)
    proj = config.get("proj_size", 0)
    h0, c0 = random_states(mode, BATCH, layers, bidirectional, HIDDEN_SIZE, proj,
                           torch.float64)

    _assert_same(call(scripted, mode, x), call(ours, mode, x))
    _assert_same(call(scripted, mode, x, h0, c0), call(ours, mode, x, h0, c0))
    # Unbatched input.
    c0_1 = c0[:, 0] if c0 is not None else None
    _assert_same(call(scripted, mode, x[0] if batch_first else x[:, 0], h0[:, 0], c0_1),
                 call(ours, mode, x[0] if batch_first else x[:, 0], h0[:, 0], c0_1))
    # Gradients flow through the scripted module.
    xg = x.clone().requires_grad_()
    out = call(scripted, mode, xg, h0, c0)[0]
    (grad_script,) = torch.autograd.grad(out.sum(), xg)
    xe = x.clone().requires_grad_()
    (grad_eager,) = torch.autograd.grad(call(ours, mode, xe, h0, c0)[0].sum(), xe)
    torch.testing.assert_close(grad_script, grad_eager, rtol=0, atol=0)
    # Errors keep their text in TorchScript.
    with pytest.raises(Exception, match="Expected hidden"):
        call(scripted, mode, x, h0[:, :1], c0)

    # Save and load.
    path = os.path.join(tmp_path, "module.pt")
    torch.jit.save(scripted, path)
    loaded = torch.jit.load(path)
    _assert_same(call(loaded, mode, x, h0, c0), call(ours, mode, x, h0, c0))
    # Training mode (dropout off here) and eval mode both survive the trip.
    loaded.eval()
    _assert_same(call(loaded, mode, x, h0, c0), call(ours, mode, x, h0, c0))


class Tagger(torch.nn.Module):
    """A user model built from deeprnn modules."""

    def __init__(self):
        super().__init__()
        self.lstm = deeprnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True,
                                 batch_first=True, proj_size=3)
        self.gru = deeprnn.GRU(6, HIDDEN_SIZE, batch_first=True)
        self.rnn = deeprnn.RNN(HIDDEN_SIZE, 5, nonlinearity="relu", batch_first=True)
        self.head = torch.nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.lstm.flatten_parameters()
        y, (h, c) = self.lstm(x)
        y, h1 = self.gru(y)
        y, _ = self.rnn(y, None)
        return self.head(y) + h.sum() + c.mean() + h1.mean()


def test_script_user_model(tmp_path):
    torch.manual_seed(42)
    model = Tagger().double()
    x = torch.randn(BATCH, SEQ_LEN, INPUT_SIZE, dtype=torch.float64)
    expected = model(x)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), expected, rtol=0, atol=0)
    path = os.path.join(tmp_path, "tagger.pt")
    torch.jit.save(scripted, path)
    loaded = torch.jit.load(path)
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    # The loaded module's parameters are the ones it computes with.
    state = loaded.state_dict()
    fresh = Tagger().double()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
    # The graph calls our operators.
    graph = str(loaded.inlined_graph)
    for op in ("deeprnn::lstm", "deeprnn::gru", "deeprnn::rnn_relu"):
        assert op in graph


def test_scripted_module_sees_load_state_dict():
    torch.manual_seed(43)
    reference, ours = make_pair("LSTM", input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE,
                                num_layers=2)
    scripted = torch.jit.script(ours)
    other = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, dtype=torch.float64)
    scripted.load_state_dict(other.state_dict())
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    torch.testing.assert_close(scripted(x)[0], other(x)[0], rtol=1e-10, atol=1e-10)
