"""Extreme values through whole stacked bidirectional networks, forward and
backward, against torch.nn with the same weights.

tests/python/test_numerics.py checks the activations' accuracy and float32
forward outputs on huge and infinite inputs; here: large inputs with large
weights in every mode and dtype (float32, float64, bfloat16), the final
states and every gradient too, and NaN in the input or the initial state
spreading to exactly the positions it spreads to in torch.nn.
"""

import pytest
import torch

from deeprnn_test_utils import (
    MODES,
    call,
    classes,
    make_pair,
    module_kwargs,
    random_states,
)

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, LAYERS = 6, 3, 4, 5, 2
INPUT_SCALE, WEIGHT_SCALE = 1e4, 1e2
DTYPES = [torch.float32, torch.float64]
RELATIVE = {torch.float32: 1e-4, torch.float64: 1e-10}
NAMES = ["output", "hy", "cy"]


def _scaled_pair(mode, dtype):
    """torch.nn and deeprnn modules with the same weights, all times 100."""
    reference, ours = make_pair(mode, dtype=dtype, input_size=INPUT_SIZE,
                                hidden_size=HIDDEN_SIZE, num_layers=LAYERS,
                                bidirectional=True)
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(WEIGHT_SCALE)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _forward_backward(module, mode, x, h0, c0, grads):
    """Results [output, hy(, cy)] and the gradients of x, h0(, c0) and every
    parameter for the upstream gradients `grads`."""
    leaves = [t.clone().requires_grad_() for t in (x, h0, c0) if t is not None]
    states = leaves[1:] + [None]
    results = call(module, mode, leaves[0], states[0], states[1])
    gradients = torch.autograd.grad(
        results, leaves + list(module.parameters()), grads)
    return [r.detach() for r in results], list(gradients)


def _names(module, mode):
    states = ["grad h0", "grad c0"] if mode == "LSTM" else ["grad h0"]
    return ["grad x"] + states + [f"grad {n}" for n, _ in module.named_parameters()]


def _assert_same_non_finite_and_close(got, expected, rel, what):
    assert got.dtype == expected.dtype, what
    assert torch.equal(got.isnan(), expected.isnan()), (
        f"{what}: NaN at {got.isnan().nonzero().tolist()}, torch.nn has NaN "
        f"at {expected.isnan().nonzero().tolist()}")
    assert torch.equal(got.isinf(), expected.isinf()), (
        f"{what}: inf at {got.isinf().nonzero().tolist()}, torch.nn has inf "
        f"at {expected.isinf().nonzero().tolist()}")
    assert torch.equal(got[got.isinf()], expected[expected.isinf()]), what  # signs
    finite = expected.isfinite()
    if finite.any():
        # The two sum their products in a different order; at these
        # magnitudes that error is relative to the largest term, not to each
        # (possibly cancelled) element.
        scale = expected[finite].abs().max().item()
        torch.testing.assert_close(got[finite], expected[finite], rtol=rel,
                                   atol=rel * max(scale, 1.0),
                                   msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
def test_large_inputs_and_weights_forward_and_backward_like_torch_nn(mode, dtype):
    torch.manual_seed(10)
    reference, ours = _scaled_pair(mode, dtype)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=dtype) * INPUT_SCALE
    h0, c0 = random_states(mode, BATCH, LAYERS, True, HIDDEN_SIZE, 0, dtype)
    with torch.no_grad():
        shapes = call(reference, mode, x, h0, c0)
    grads = [torch.randn_like(r) for r in shapes]
    results_ref, gradients_ref = _forward_backward(reference, mode, x, h0, c0, grads)
    results, gradients = _forward_backward(ours, mode, x, h0, c0, grads)

    if mode != "RNN_RELU":
        # Saturating cells: torch.nn's results are all finite, so the checks
        # below demand that ours are. Most gates here sit deep in saturation,
        # where sigmoid and tanh round to exactly 0 or +-1 and their
        # derivatives to 0: an activation that stops one ulp short of 1
        # leaves a derivative of ~1e-7, which inputs of 1e4 turn into
        # visible input and weight gradients where torch.nn has none.
        for r in results_ref + gradients_ref:
            assert r.isfinite().all()
    rel = RELATIVE[dtype]
    for name, got, expected in zip(NAMES, results, results_ref):
        _assert_same_non_finite_and_close(got, expected, rel, name)
    for name, got, expected in zip(_names(ours, mode), gradients, gradients_ref):
        _assert_same_non_finite_and_close(got, expected, rel, name)


def _bfloat16_error(got, expected):
    """|got - expected| / max(|expected|, 1): relative, except where the
    exact result is (near) zero, e.g. a gradient through saturated gates."""
    got, expected = got.detach().double(), expected.detach().double()
    return ((got - expected).norm() / max(expected.norm().item(), 1.0)).item()


@pytest.mark.parametrize("mode", MODES)
def test_large_inputs_and_weights_in_bfloat16(mode):
    torch.manual_seed(11)
    reference, ours = _scaled_pair(mode, torch.float64)
    ours.to(torch.bfloat16)
    torch_cls, _ = classes(mode)
    torch_low = torch_cls(**module_kwargs(
        mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=LAYERS,
        bidirectional=True), dtype=torch.bfloat16)
    torch_low.load_state_dict(ours.state_dict())
    # The float64 reference computes with the bfloat16-rounded weights and
    # inputs, so only the arithmetic differs.
    reference.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = (torch.randn(SEQ_LEN, BATCH, INPUT_SIZE) * INPUT_SCALE).to(torch.bfloat16)
    h0, c0 = random_states(mode, BATCH, LAYERS, True, HIDDEN_SIZE, 0, torch.bfloat16)
    with torch.no_grad():
        shapes = call(reference, mode, x.double())
    grads = [torch.randn_like(r).to(torch.bfloat16) for r in shapes]
    results, gradients = _forward_backward(ours, mode, x, h0, c0, grads)
    results_low, gradients_low = _forward_backward(torch_low, mode, x, h0, c0, grads)
    results_ref, gradients_ref = _forward_backward(
        reference, mode, x.double(), h0.double(),
        c0.double() if c0 is not None else None, [g.double() for g in grads])

    names = NAMES[:len(results)] + _names(ours, mode)
    errors, torch_errors = {}, {}
    for name, got, low, expected in zip(
            names, results + gradients, results_low + gradients_low,
            results_ref + gradients_ref):
        assert got.dtype == torch.bfloat16, name
        # torch.nn in bfloat16 stays finite (saturating cells; ReLU values
        # reach about 1e17, far below bfloat16's 3e38), so must we.
        assert low.isfinite().all(), name
        assert got.isfinite().all(), name
        errors[name] = _bfloat16_error(got, expected)
        torch_errors[name] = _bfloat16_error(low, expected)
    # Weights of 100 make the second layer's pre-activations sums of terms
    # in the tens: one bfloat16 rounding there moves a gate visibly, in
    # torch.nn as in deeprnn. So the bound is torch.nn's own bfloat16 error
    # against the same float64 reference (twice its worst), or 2e-2.
    worst = max(errors, key=errors.get)
    bound = max(2e-2, 2 * max(torch_errors.values()))
    assert errors[worst] < bound, (worst, errors, torch_errors)


@pytest.mark.parametrize("where", ["input", "h0"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
def test_nan_spreads_to_the_same_positions_as_in_torch_nn(mode, dtype, where):
    torch.manual_seed(12)
    reference, ours = make_pair(mode, dtype=dtype, input_size=INPUT_SIZE,
                                hidden_size=HIDDEN_SIZE, num_layers=LAYERS,
                                bidirectional=True)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=dtype)
    h0, c0 = random_states(mode, BATCH, LAYERS, True, HIDDEN_SIZE, 0, dtype)
    nan_row = 1
    if where == "input":
        x[2, nan_row, 0] = float("nan")
    else:
        h0[3, nan_row, 2] = float("nan")  # layer 1, reverse direction
    grads = [torch.randn_like(r) for r in call(reference, mode, x, h0, c0)]
    results_ref, gradients_ref = _forward_backward(reference, mode, x, h0, c0, grads)
    results, gradients = _forward_backward(ours, mode, x, h0, c0, grads)
    assert results_ref[0].isnan().any() and not results_ref[0].isnan().all()
    rel = RELATIVE[dtype]
    for name, got, expected in zip(NAMES, results, results_ref):
        _assert_same_non_finite_and_close(got, expected, rel, name)
    for name, got, expected in zip(_names(ours, mode), gradients, gradients_ref):
        if mode == "RNN_RELU":
            # torch.nn's ReLU backward (threshold_backward) passes the
            # gradient where !(h <= 0), so through a NaN unit, and finite
            # gradients then come out of NaN steps; deeprnn passes it where
            # h > 0 and stops it there. Neither is meaningful at NaN, so the
            # values are compared where no NaN was on the way: the other
            # batch rows of the input and state gradients (batch rows do not
            # mix). Where NaN reaches, it must be NaN in both.
            assert torch.equal(got.isnan(), expected.isnan()), name
            if name in ("grad x", "grad h0"):
                rows = [b for b in range(BATCH) if b != nan_row]
                _assert_same_non_finite_and_close(
                    got[:, rows], expected[:, rows], rel, name)
            continue
        _assert_same_non_finite_and_close(got, expected, rel, name)
