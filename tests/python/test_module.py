"""deeprnn.RNN/GRU/LSTM present the surface of torch.nn.RNN/GRU/LSTM."""

import copy
import io

import pytest
import torch
from torch.nn import Parameter

import deeprnn
from deeprnn_test_utils import MODES, call, classes, make_pair, module_kwargs, random_states

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE = 5, 3, 4, 6

CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, bias=False, batch_first=True, dropout=0.25),
    dict(num_layers=2, proj_size=2, bidirectional=True),
]


def _configs():
    for mode in MODES:
        for i, config in enumerate(CONFIGS):
            if "proj_size" in config and mode != "LSTM":
                continue
            yield pytest.param(mode, config, id=f"{mode}-{i}")


ATTRIBUTES = ["mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
              "dropout", "bidirectional", "proj_size", "_flat_weights_names",
              "_all_weights", "training"]


@pytest.mark.parametrize("mode, config", list(_configs()))
def test_attributes_parameters_and_init_match_torch_nn(mode, config):
    torch_cls, our_cls = classes(mode)
    kwargs = module_kwargs(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, **config)
    torch.manual_seed(21)
    reference = torch_cls(**kwargs)
    torch.manual_seed(21)
    ours = our_cls(**kwargs)
    for name in ATTRIBUTES:
        assert getattr(ours, name) == getattr(reference, name), name
    if mode.startswith("RNN"):
        assert ours.nonlinearity == reference.nonlinearity
    # Same names, order, shapes, dtypes and (same seed) the same values.
    ref_state = reference.state_dict()
    our_state = ours.state_dict()
    assert list(our_state) == list(ref_state)
    for name in ref_state:
        assert our_state[name].shape == ref_state[name].shape, name
        assert torch.equal(our_state[name], ref_state[name]), name
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert len(ours._flat_weights) == len(reference._flat_weights)
    for mine, theirs in zip(ours._flat_weights, reference._flat_weights):
        assert torch.equal(mine, theirs)
    for name, weight in zip(ours._flat_weights_names, ours._flat_weights):
        assert weight is getattr(ours, name)
    assert [[w.shape for w in ws] for ws in ours.all_weights] == \
        [[w.shape for w in ws] for ws in reference.all_weights]
    # The same repr (the class names are the same too).
    assert repr(ours) == repr(reference)
    assert repr(torch.nn.Sequential(ours)) == repr(torch.nn.Sequential(reference))
    assert not isinstance(ours, torch.nn.RNNBase)


@pytest.mark.parametrize("mode", MODES)
def test_factory_kwargs(mode):
    _, our_cls = classes(mode)
    kwargs = module_kwargs(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE)
    ours = our_cls(**kwargs, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in ours.parameters())
    stdv = 1.0 / HIDDEN_SIZE ** 0.5
    assert all(p.abs().max() <= stdv for p in ours.parameters())


def test_positional_arguments_like_torch_nn():
    torch.manual_seed(0)
    reference = torch.nn.RNN(INPUT_SIZE, HIDDEN_SIZE, 2, "relu", False, True, 0.0, True)
    torch.manual_seed(0)
    ours = deeprnn.RNN(INPUT_SIZE, HIDDEN_SIZE, 2, "relu", False, True, 0.0, True)
    for name in ATTRIBUTES + ["nonlinearity"]:
        assert getattr(ours, name) == getattr(reference, name), name
    reference = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, 2, True, False, 0.0, True, 3)
    ours = deeprnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, 2, True, False, 0.0, True, 3)
    for name in ATTRIBUTES:
        assert getattr(ours, name) == getattr(reference, name), name


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_round_trip_both_ways(mode):
    torch.manual_seed(22)
    kwargs = module_kwargs(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=2,
                           bidirectional=True, proj_size=3)
    torch_cls, our_cls = classes(mode)
    ours = our_cls(**kwargs, dtype=torch.float64)
    reference = torch_cls(**kwargs, dtype=torch.float64)
    reference.load_state_dict(ours.state_dict())  # ours -> torch.nn
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    for got, expected in zip(call(ours, mode, x), call(reference, mode, x)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # torch.nn -> ours, with strict key checking.
    back = our_cls(**kwargs, dtype=torch.float64)
    result = back.load_state_dict(reference.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for got, expected in zip(call(back, mode, x), call(reference, mode, x)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_flat_weights_follow_conversions_and_replacements(mode):
    torch.manual_seed(23)
    reference, ours = make_pair(mode, dtype=torch.float32, input_size=INPUT_SIZE,
                                hidden_size=HIDDEN_SIZE, num_layers=2, bidirectional=True)

    def in_sync(module, dtype):
        assert len(module._flat_weights) == len(module._flat_weights_names)
        for name, weight in zip(module._flat_weights_names, module._flat_weights):
            assert weight is getattr(module, name), name
            assert weight.dtype == dtype, name

    ours.double()
    reference.double()
    in_sync(ours, torch.float64)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    for got, expected in zip(call(ours, mode, x), call(reference, mode, x)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)

    ours.to(torch.float32)
    in_sync(ours, torch.float32)
    ours.to(dtype=torch.float64)
    in_sync(ours, torch.float64)

    # Conversions that put new Parameter objects in place.
    previous = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        before = ours.weight_ih_l0
        ours.float()
        assert ours.weight_ih_l0 is not before
        in_sync(ours, torch.float32)
        ours.double()
        in_sync(ours, torch.float64)
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(previous)

    # Replacing a parameter by assignment, on both modules.
    new_weight = torch.randn_like(ours.weight_hh_l1)
    ours.weight_hh_l1 = Parameter(new_weight.clone())
    reference.weight_hh_l1 = Parameter(new_weight.clone())
    in_sync(ours, torch.float64)
    for got, expected in zip(call(ours, mode, x), call(reference, mode, x)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)

    # flatten_parameters() is a harmless no-op.
    weights = list(ours._flat_weights)
    assert ours.flatten_parameters() is None
    assert all(a is b for a, b in zip(weights, ours._flat_weights))


@pytest.mark.parametrize("mode", MODES)
def test_functional_call_uses_the_given_parameters(mode):
    torch.manual_seed(24)
    reference, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE,
                                num_layers=2)
    new = {name: torch.randn_like(p) for name, p in reference.named_parameters()}
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    got = torch.func.functional_call(ours, new, (x,))
    expected = torch.func.functional_call(reference, new, (x,))
    torch.testing.assert_close(got[0], expected[0], rtol=1e-10, atol=1e-10)
    # The module's own parameters are back in use afterwards.
    torch.testing.assert_close(ours(x)[0], reference(x)[0], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(ours(x)[0], got[0])


@pytest.mark.parametrize("mode", MODES)
def test_deepcopy_and_pickle(mode):
    torch.manual_seed(25)
    _, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=2,
                        bidirectional=True, proj_size=2)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    expected = call(ours, mode, x)
    clone = copy.deepcopy(ours)
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for other in (clone, loaded):
        for name, weight in zip(other._flat_weights_names, other._flat_weights):
            assert weight is getattr(other, name)
        for got, want in zip(call(other, mode, x), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    # The copy owns its parameters.
    with torch.no_grad():
        clone.weight_ih_l0.add_(1.0)
    torch.testing.assert_close(call(ours, mode, x)[0], expected[0], rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_training_step_matches_torch_nn(mode):
    """A few SGD steps through both modules keep them equal."""
    torch.manual_seed(26)
    reference, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE,
                                num_layers=2, bidirectional=True, batch_first=True)
    opt_ref = torch.optim.SGD(reference.parameters(), lr=0.1)
    opt_our = torch.optim.SGD(ours.parameters(), lr=0.1)
    for _ in range(3):
        x = torch.randn(BATCH, SEQ_LEN, INPUT_SIZE, dtype=torch.float64)
        target = torch.randn(BATCH, SEQ_LEN, 2 * HIDDEN_SIZE, dtype=torch.float64)
        for module, opt in ((reference, opt_ref), (ours, opt_our)):
            opt.zero_grad()
            loss = (call(module, mode, x)[0] - target).pow(2).mean()
            loss.backward()
            opt.step()
    for (name, a), b in zip(reference.named_parameters(), ours.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10, msg=name)


def test_package_surface():
    assert isinstance(deeprnn.__version__, str) and deeprnn.__version__
    assert set(deeprnn.__all__) >= {"RNN", "GRU", "LSTM", "functional", "__version__"}
    for name in ["lstm", "gru", "rnn_tanh", "rnn_relu", "_rnn_forward", "_rnn_backward",
                 "reserve_size"]:
        assert isinstance(getattr(torch.ops.deeprnn, name), torch._ops.OpOverloadPacket)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("mode", MODES)
def test_functional_wrappers_match_the_ops(mode):
    torch.manual_seed(27)
    _, ours = make_pair(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=2,
                        bidirectional=True)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64)
    h0, c0 = random_states(mode, BATCH, 2, True, HIDDEN_SIZE, 0, torch.float64)
    params = list(ours.parameters())
    common = (params, True, 2, 0.0, False, True, False)
    name = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}[mode]
    wrapper = getattr(deeprnn.functional, name)
    assert wrapper.__doc__
    if mode == "LSTM":
        got = wrapper(x, h0, c0, *common)
        expected = torch.ops.deeprnn.lstm(x, h0, c0, *common)
    else:
        got = wrapper(x, h0, *common)
        expected = getattr(torch.ops.deeprnn, name)(x, h0, *common)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
    scripted = torch.jit.script(wrapper)
    again = scripted(x, h0, c0, *common) if mode == "LSTM" else scripted(x, h0, *common)
    for g, e in zip(again, expected):
        assert torch.equal(g, e)
