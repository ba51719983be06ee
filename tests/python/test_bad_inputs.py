"""A catalogue of bad inputs, each tried through the operators and the modules.

Three tables, one per way in:

* OP_CASES: torch.ops.deeprnn.* called directly (public ops, the private
  _rnn_backward and reserve_size);
* MODULE_CASES: deeprnn.RNN/GRU/LSTM forward, side by side with torch.nn;
* CTOR_CASES and ABSURD_CASES: module constructors (absurd sizes such as
  hidden_size=2**40 run in a child process under an address-space limit).

Every case must raise a clear error (type and message checked by a regex that
names the op or argument and what was expected and given), must not crash the
process, and must leave the module/operator working: a valid call right after
it is compared with torch.nn. A module case where torch.nn raises too must
raise the same exception type as torch.nn.

Cases marked ``isolate`` could read out of bounds or crash while deeprnn
mishandles them; they run in a child process so that a crash fails that test
only. tests/python/test_errors.py holds the older checks; the cases here do
not repeat them.
"""

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import pytest
import torch
from torch.nn import Parameter

import deeprnn
from deeprnn_test_utils import MODES, OP_NAMES, call, classes, make_pair, module_kwargs, \
    public_op, random_states

T, B, IN, H, P_LSTM = 5, 3, 4, 6, 3
LAYERS, D = 2, 2
DT = torch.float64
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}

# A child process gets this much address space: far beyond what a valid case
# needs, far below the terabytes an absurd size asks for, so that an absurd
# allocation fails the same way whatever the machine's overcommit policy.
CHILD_ADDRESS_SPACE = 16 << 30
CHILD_TIMEOUT_S = 120


def _rand(*shape, dtype=DT):
    return torch.randn(*shape, dtype=dtype)


class Ctx:
    """One mode's setting: 2 layers, bidirectional, LSTM with projection.

    ``call(**overrides)`` runs the public op with the good arguments except
    the ones overridden; ``fields`` fills the ``{...}`` of a case's regex.
    """

    def __init__(self, mode):
        torch.manual_seed(2024)
        self.mode = mode
        self.name = OP_NAMES[mode]
        self.lstm = mode == "LSTM"
        self.proj = P_LSTM if self.lstm else 0
        self.reference, self.ours = make_pair(
            mode, input_size=IN, hidden_size=H, num_layers=LAYERS, bidirectional=True,
            proj_size=self.proj)
        self.x = _rand(T, B, IN)
        self.h0, self.c0 = random_states(mode, B, LAYERS, True, H, self.proj, DT)
        # The Parameters themselves: they require grad, so the public op
        # takes its Autograd path (the usual one for a user).
        self.params = list(self.ours._flat_weights)
        self.names = list(self.ours._flat_weights_names)
        self.G = GATES[mode]
        self.P = self.proj or H
        self.fields = dict(
            op=self.name, G=self.G, H=H, P=self.P, GH=self.G * H, DP=D * self.P,
            pname="proj_size" if self.proj else "hidden_size", T=T, B=B, IN=IN)

    def args(self, **overrides):
        args = dict(input=self.x, hx=self.h0, cx=self.c0, params=self.params,
                    has_biases=True, num_layers=LAYERS, dropout=0.0, train=False,
                    bidirectional=True, batch_first=False)
        unknown = set(overrides) - set(args)
        assert not unknown, unknown
        args.update(overrides)
        return args

    def call(self, **overrides):
        a = self.args(**overrides)
        tail = (a["params"], a["has_biases"], a["num_layers"], a["dropout"], a["train"],
                a["bidirectional"], a["batch_first"])
        if self.lstm:
            return public_op(self.mode)(a["input"], a["hx"], a["cx"], *tail)
        assert overrides.get("cx") is None, "cx is LSTM only"
        return public_op(self.mode)(a["input"], a["hx"], *tail)

    def index(self, name):
        return self.names.index(name)

    def detached(self):
        return [p.detach() for p in self.params]

    def replace(self, name, tensor):
        params = self.detached()
        params[self.index(name)] = tensor
        return params

    def backward(self, **overrides):
        """The private _rnn_backward after a forward that keeps the reserve;
        overrides replace output, reserve, grad_output, grad_hy, grad_cy or
        mode, each by a value or by a function of the good value."""
        params = self.detached()
        output, hy, cy, reserve = torch.ops.deeprnn._rnn_forward(
            self.x, self.h0, self.c0, params, True, LAYERS, 0.0, True, True, False, self.name,
            True)
        a = dict(output=output, reserve=reserve, grad_output=torch.randn_like(output),
                 grad_hy=torch.randn_like(hy),
                 grad_cy=torch.randn_like(cy) if self.lstm else None, mode=self.name)
        unknown = set(overrides) - set(a)
        assert not unknown, unknown
        for key, value in overrides.items():
            a[key] = value(a[key]) if callable(value) else value
        return torch.ops.deeprnn._rnn_backward(
            self.x, self.h0, self.c0, params, a["output"], a["reserve"], a["grad_output"],
            a["grad_hy"], a["grad_cy"], True, LAYERS, 0.0, True, True, False, a["mode"],
            [True, True, True, True])

    def assert_op_still_works(self):
        got = self.call()
        expected = call(self.reference, self.mode, self.x, self.h0, self.c0)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)

    def assert_module_still_works(self):
        got = call(self.ours, self.mode, self.x, self.h0, self.c0)
        expected = call(self.reference, self.mode, self.x, self.h0, self.c0)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def _expected_regex(match, ctx):
    return match(ctx) if callable(match) else match.format(**ctx.fields)


def _param_regex(name, expected_shape, got_shape):
    """Regex of the op's message for a parameter of the wrong shape."""
    def build(c):
        return (rf"^deeprnn\.{c.name}: parameter {c.index(name)} \({name}\) must have shape "
                rf"{_shape(expected_shape(c))}, got {_shape(got_shape(c))}$")
    return build


def _shape(sizes):
    inner = ", ".join(str(s) for s in sizes)
    return r"\(" + inner + ("," if len(sizes) == 1 else "") + r"\)"


# ------------------------------------------------------------ the operators


@dataclass
class OpCase:
    id: str
    run: Callable[[Ctx], object]  # makes the bad call
    match: object  # regex (str with {fields}, or ctx -> str), searched
    modes: Tuple[str, ...] = tuple(MODES)
    error: type = RuntimeError
    isolate: bool = False  # may crash while the bug is there: child process


def _no_w_hr(c):
    return [p for p, n in zip(c.detached(), c.names) if not n.startswith("weight_hr")]


def _complex(c):
    cd = torch.complex128
    return c.call(input=c.x.to(cd), hx=c.h0.to(cd), cx=c.c0.to(cd) if c.lstm else None,
                  params=[p.detach().to(cd) for p in c.params])


def _int32(c):
    def as_int(t):
        return (t * 10).to(torch.int32)  # scaled: the values stay distinct
    return c.call(input=as_int(c.x), hx=as_int(c.h0), cx=as_int(c.c0) if c.lstm else None,
                  params=[as_int(p.detach()) for p in c.params])


SINGLE_STATE = ("GRU", "RNN_TANH", "RNN_RELU")

OP_CASES = [
    # --- ranks
    OpCase("input_0d", lambda c: c.call(input=c.x[0, 0, 0]),
           r"^deeprnn\.{op}: expected 3-D input \(seq_len, batch, input_size\), got a 0-D "
           r"tensor of shape \(\)"),
    OpCase("input_1d_batch_first_autograd", lambda c: c.call(input=c.x[0, 0], batch_first=True),
           r"^deeprnn\.{op}: expected 3-D input \(batch, seq_len, input_size\), got a 1-D "
           r"tensor of shape \(4,\)"),
    OpCase("input_4d_batch_first_autograd",
           lambda c: c.call(input=_rand(B, T, IN, 2), batch_first=True),
           r"^deeprnn\.{op}: expected 3-D input \(batch, seq_len, input_size\), got a 4-D "
           r"tensor of shape \(3, 5, 4, 2\)"),
    OpCase("hx_4d", lambda c: c.call(hx=c.h0.unsqueeze(0)),
           r"^deeprnn\.{op}: hx must have shape \(4, 3, {P}\) = \(num_layers\*num_directions, "
           r"batch, {pname}\), got \(1, 4, 3, {P}\)$"),
    OpCase("weight_ih_1d", lambda c: c.call(params=c.replace("weight_ih_l0", _rand(c.G * H))),
           r"^deeprnn\.{op}: parameter 0 \(weight_ih_l0\) must be a 2-D tensor of shape "
           r"\({G}\*hidden_size, input_size\), got \({GH},\)$"),
    OpCase("weight_hh_3d",
           lambda c: c.call(params=c.replace("weight_hh_l0_reverse",
                                             c.params[c.index("weight_hh_l0_reverse")]
                                             .detach().unsqueeze(0))),
           _param_regex("weight_hh_l0_reverse", lambda c: (c.G * H, c.P),
                        lambda c: (1, c.G * H, c.P))),
    OpCase("bias_0d", lambda c: c.call(params=c.replace("bias_ih_l1", torch.tensor(0.5, dtype=DT))),
           _param_regex("bias_ih_l1", lambda c: (c.G * H,), lambda c: ())),
    OpCase("bias_2d", lambda c: c.call(params=c.replace("bias_hh_l0", _rand(c.G * H, 1))),
           _param_regex("bias_hh_l0", lambda c: (c.G * H,), lambda c: (c.G * H, 1))),
    # --- sizes
    OpCase("seq_len_0", lambda c: c.call(input=c.x[:0]),
           r"^deeprnn\.{op}: input must have at least one time step, got seq_len 0 \(input "
           r"shape \(0, 3, 4\)\)$"),
    OpCase("seq_len_0_batch_first_autograd",
           lambda c: c.call(input=_rand(B, 0, IN), batch_first=True),
           r"^deeprnn\.{op}: input must have at least one time step, got seq_len 0 \(input "
           r"shape \(3, 0, 4\)\)$"),
    OpCase("hx_batch_is_seq_len_with_batch_first",
           lambda c: c.call(input=c.x.transpose(0, 1), batch_first=True,
                            hx=_rand(LAYERS * D, T, c.P)),
           r"^deeprnn\.{op}: hx must have shape \(4, 3, {P}\) = \(num_layers\*num_directions, "
           r"batch, {pname}\), got \(4, 5, {P}\)$"),
    OpCase("weight_ih_rows_not_a_multiple_of_gates",
           lambda c: c.call(params=c.replace("weight_ih_l0", _rand(c.G * H + 1, IN))),
           lambda c: (rf"^deeprnn\.{c.name}: parameter 0 \(weight_ih_l0\) must be a 2-D tensor "
                      rf"of shape \({c.G}\*hidden_size, input_size\), got "
                      rf"\({c.G * H + 1}, 4\)$"),
           modes=("LSTM", "GRU")),
    OpCase("weight_ih_zero_rows", lambda c: c.call(params=c.replace("weight_ih_l0", _rand(0, IN))),
           r"^deeprnn\.{op}: parameter 0 \(weight_ih_l0\) must be a 2-D tensor of shape "
           r"\({G}\*hidden_size, input_size\), got \(0, 4\)$"),
    OpCase("weight_ih_l1_width_not_directions_times_out",
           lambda c: c.call(params=c.replace("weight_ih_l1", _rand(c.G * H, D * c.P + 1))),
           _param_regex("weight_ih_l1", lambda c: (c.G * H, D * c.P),
                        lambda c: (c.G * H, D * c.P + 1))),
    OpCase("weight_hr_width_not_hidden",
           lambda c: c.call(params=c.replace("weight_hr_l0", _rand(P_LSTM, H + 1))),
           r"^deeprnn\.lstm: parameter 4 \(weight_hr_l0\) must be a 2-D tensor of shape "
           r"\(proj_size, 6\), got \(3, 7\)$", modes=("LSTM",)),
    OpCase("weight_hr_l1_other_proj_size",
           lambda c: c.call(params=c.replace("weight_hr_l1_reverse", _rand(P_LSTM - 1, H))),
           _param_regex("weight_hr_l1_reverse", lambda c: (P_LSTM, H), lambda c: (P_LSTM - 1, H)),
           modes=("LSTM",)),
    # Without any weight_hr the list reads as an LSTM without projection,
    # whose weight_hh is (4H, H).
    OpCase("weight_hr_all_missing", lambda c: c.call(params=_no_w_hr(c)),
           r"^deeprnn\.lstm: parameter 1 \(weight_hh_l0\) must have shape \(24, 6\), got "
           r"\(24, 3\)$", modes=("LSTM",)),
    OpCase("params_with_none",
           lambda c: c.call(params=[None if n == "weight_hh_l1" else p
                                    for p, n in zip(c.detached(), c.names)]),
           r"argument 'params'"),
    # --- dtypes
    OpCase("all_complex", _complex,
           r"^deeprnn\.{op}: input must be a floating point tensor \(float, double, bfloat16 "
           r"or half\), got ComplexDouble$"),
    OpCase("all_int32", _int32,
           r"^deeprnn\.{op}: input must be a floating point tensor \(float, double, bfloat16 "
           r"or half\), got Int$"),
    OpCase("cx_float32", lambda c: c.call(cx=c.c0.float()),
           r"^deeprnn\.lstm: cx must have the dtype of input \(double\), got float$",
           modes=("LSTM",)),
    OpCase("hx_half", lambda c: c.call(hx=c.h0.half()),
           r"^deeprnn\.{op}: hx must have the dtype of input \(double\), got half$"),
    # --- devices ('meta' stands for another device: there is no GPU here)
    OpCase("input_on_meta", lambda c: c.call(input=c.x.to("meta")),
           r"^deeprnn\.{op}: all parameters must be on the device of input \(meta\), got cpu "
           r"for parameter 0 \(weight_ih_l0\)$"),
    OpCase("hx_on_meta", lambda c: c.call(hx=c.h0.to("meta")),
           r"^deeprnn\.{op}: hx must be on the device of input \(cpu\), got meta$"),
    OpCase("cx_on_meta", lambda c: c.call(cx=c.c0.to("meta")),
           r"^deeprnn\.lstm: cx must be on the device of input \(cpu\), got meta$",
           modes=("LSTM",)),
    OpCase("param_on_meta",
           lambda c: c.call(params=c.replace("bias_hh_l1_reverse", _rand(c.G * H).to("meta"))),
           lambda c: (rf"^deeprnn\.{c.name}: all parameters must be on the device of input "
                      rf"\(cpu\), got meta for parameter {c.index('bias_hh_l1_reverse')} "
                      r"\(bias_hh_l1_reverse\)$")),
    # --- options
    OpCase("dropout_nan", lambda c: c.call(dropout=math.nan, train=True),
           r"^deeprnn\.{op}: dropout must be in \[0, 1\], got nan$"),
    OpCase("dropout_minus_inf", lambda c: c.call(dropout=-math.inf),
           r"^deeprnn\.{op}: dropout must be in \[0, 1\], got -inf$"),
    OpCase("num_layers_2_pow_40",
           lambda c: c.call(num_layers=2 ** 40),
           lambda c: (rf"^deeprnn\.{c.name}: expected {2 ** 40 * D * 4} parameter tensors "
                      rf".*got {len(c.params)}$")),
    # num_layers * num_directions * 4 wraps around to 0 in int64, which an
    # empty list then "matches".
    OpCase("num_layers_2_pow_62_empty_params",
           lambda c: c.call(params=[], num_layers=2 ** 62),
           r"^deeprnn\.{op}: .*(num_layers|parameter tensors)", modes=("LSTM", "GRU"),
           isolate=True),
    # --- the private backward op
    OpCase("backward_unknown_mode", lambda c: c.backward(mode=c.name.upper()),
           r"^deeprnn: unknown mode '(LSTM|GRU|RNN_TANH|RNN_RELU)', expected one of 'lstm', "
           r"'gru', 'rnn_tanh', 'rnn_relu'$"),
    OpCase("backward_reserve_one_short", lambda c: c.backward(reserve=lambda r: r[:-1]),
           r"^deeprnn\.{op} backward: reserve must have (\d+) elements \(from _rnn_forward "
           r"with need_reserve=True and the same arguments\), got \d+$"),
    OpCase("backward_output_wrong_shape",
           lambda c: c.backward(output=_rand(T, B, D * c.P + 1)),
           r"^deeprnn\.{op} backward: output must have shape \(5, 3, {DP}\) \(the forward's "
           r"output: \(seq_len, batch, num_directions\*hidden\)\), got \(5, 3, \d+\)$"),
    OpCase("backward_grad_output_too_short",
           lambda c: c.backward(grad_output=_rand(T - 2, B, D * c.P)),
           r"^deeprnn\.{op} backward: grad_output must have shape .*5, 3, {DP}.*got "
           r".*3, 3, {DP}", modes=("LSTM", "GRU"), isolate=True),
    OpCase("backward_grad_output_too_long",
           lambda c: c.backward(grad_output=lambda g: torch.cat([g, g[:3]])),
           r"^deeprnn\.{op} backward: grad_output must have shape .*5, 3, {DP}.*got "
           r".*8, 3, {DP}"),
    OpCase("backward_grad_hy_wrong_shape",
           lambda c: c.backward(grad_hy=_rand(LAYERS * D, B, c.P + 2)),
           r"^deeprnn\.{op} backward: grad_hy must have shape .*4, 3, {P}"),
    OpCase("backward_grad_cy_wrong_shape",
           lambda c: c.backward(grad_cy=_rand(LAYERS * D, B, H + 2)),
           r"^deeprnn\.lstm backward: grad_cy must have shape .*4, 3, 6", modes=("LSTM",)),
    OpCase("backward_grad_output_float32", lambda c: c.backward(grad_output=lambda g: g.float()),
           r"^deeprnn\.{op} backward: grad_output must have the dtype of input \(double\), "
           r"got float"),
    OpCase("backward_reserve_float32", lambda c: c.backward(reserve=lambda r: r.float()),
           r"^deeprnn\.{op} backward: reserve must have the dtype of input \(double\), "
           r"got float"),
    OpCase("backward_grad_output_on_meta",
           lambda c: c.backward(grad_output=lambda g: g.to("meta")),
           r"^deeprnn\.{op} backward: grad_output must be on the device of input \(cpu\), got "
           r"meta", modes=("LSTM", "GRU"), isolate=True),
    # --- reserve_size
    OpCase("reserve_size_overflows_int64",
           lambda c: torch.ops.deeprnn.reserve_size(c.name, 2 ** 40, 2 ** 40, IN, 2 ** 40, 0, 1,
                                                    False, False),
           r"^deeprnn\.reserve_size: .*overflow"),
    OpCase("reserve_size_proj_outside_lstm",
           lambda c: torch.ops.deeprnn.reserve_size(c.name, T, B, IN, H, 2, 1, False, False),
           r"^deeprnn\.reserve_size: proj_size is only supported by lstm, got 2 for {op}$",
           modes=SINGLE_STATE),
]



def _check_op_case(case, mode):
    c = Ctx(mode)
    with pytest.raises(Exception) as info:
        case.run(c)
    assert isinstance(info.value, case.error), (
        f"expected {case.error.__name__}, got {info.type.__name__}: {info.value}")
    _assert_message(info.value, _expected_regex(case.match, c))
    c.assert_op_still_works()


def _assert_message(error, pattern):
    message = str(error).split("\nException raised from")[0]  # no C++ backtrace
    assert re.search(pattern, message), f"message {message!r} does not match /{pattern}/"


def _params_of(table):
    return [pytest.param(case, mode, id=f"{case.id}-{mode}")
            for case in table for mode in case.modes]


@pytest.mark.parametrize("case,mode", _params_of(OP_CASES))
def test_op(case, mode):
    if case.isolate:
        _expect_child_passes(_run_child("op", case.id, mode))
    else:
        _check_op_case(case, mode)


# --------------------------------------------------------- the Python module


@dataclass
class ModuleCase:
    id: str
    run: Callable[[torch.nn.Module, Ctx], object]  # the bad call, on ours or torch.nn's
    match: object  # regex for our message
    modes: Tuple[str, ...] = tuple(MODES)
    # Changes the module before the call; returns what undoes it.
    mutate: Optional[Callable[[torch.nn.Module, Ctx], Callable[[], None]]] = None
    # None: torch.nn raises too, and ours must raise the same type. Else how
    # torch.nn differs (it accepts the input, or its error is less clear).
    torch_nn: Optional[str] = None
    error: object = RuntimeError  # our type where torch.nn differs


def _set_param(name, make):
    def mutate(module, c):
        old = getattr(module, name)
        setattr(module, name, make(old))
        return lambda: setattr(module, name, old)
    return mutate


def _del_param(name):
    def mutate(module, c):
        old = getattr(module, name)
        delattr(module, name)
        return lambda: setattr(module, name, old)
    return mutate


def _set_attr(attr, value):
    def mutate(module, c):
        old = getattr(module, attr)
        setattr(module, attr, value)
        return lambda: setattr(module, attr, old)
    return mutate


def _forward(x, h0=None, c0=None):
    """run(): the module on x(c) and, if given, the states h0(c), c0(c)."""
    def run(module, c):
        h = h0(c) if h0 else None
        cell = c0(c) if (c0 and c.lstm) else None
        return call(module, c.mode, x(c), h, cell)
    return run


def _plain(module, c):
    return module(c.x)


MODULE_CASES = [
    ModuleCase("input_0d", lambda m, c: m(c.x[0, 0, 0]),
               r"^(LSTM|GRU|RNN): Expected input to be 2D or 3D, got 0D"),
    ModuleCase("hx_4d", _forward(lambda c: c.x, lambda c: c.h0.unsqueeze(0), lambda c: c.c0),
               r"^For batched 3-D input, hx (and cx )?should also be 3-D but got \(?4-D"),
    ModuleCase("unbatched_input_c0_3d", lambda m, c: m(c.x[:, 0], (c.h0[:, 0], c.c0)),
               r"^For unbatched 2-D input, hx and cx should also be 2-D but got \(2-D, 3-D\) "
               r"tensors$", modes=("LSTM",)),
    ModuleCase("hx_batch_is_seq_len_with_batch_first",
               _forward(lambda c: c.x.transpose(0, 1), lambda c: _rand(LAYERS * D, T, c.P),
                        lambda c: _rand(LAYERS * D, T, H)),
               r"^Expected hidden(\[0\])? size \(4, 3, {P}\), got \[4, 5, {P}\]$",
               mutate=_set_attr("batch_first", True)),
    ModuleCase("hx_float32", _forward(lambda c: c.x, lambda c: c.h0.float(), lambda c: c.c0),
               r"^deeprnn\.{op}: hx must have the dtype of input \(double\), got float$"),
    ModuleCase("cx_float32", _forward(lambda c: c.x, lambda c: c.h0, lambda c: c.c0.float()),
               r"^deeprnn\.lstm: cx must have the dtype of input \(double\), got float$",
               modes=("LSTM",),
               torch_nn="accepts a float32 c_0 beside float64 weights and input; deeprnn "
                        "refuses mixed dtypes"),
    ModuleCase("input_int64", lambda m, c: m(c.x.long()),
               r"^RNN input dtype \(torch\.int64\) does not match weight dtype "
               r"\(torch\.float64\)"),
    ModuleCase("input_complex128", lambda m, c: m(c.x.to(torch.complex128)),
               r"^RNN input dtype \(torch\.complex128\) does not match weight dtype "
               r"\(torch\.float64\)"),
    ModuleCase("param_float32", _plain,
               lambda c: (rf"^deeprnn\.{c.name}: all parameters must have the dtype of input "
                          rf"\(double\), got float for parameter {c.index('weight_hh_l1')} "
                          r"\(weight_hh_l1\)$"),
               mutate=_set_param("weight_hh_l1", lambda old: Parameter(old.detach().float()))),
    ModuleCase("input_on_meta", lambda m, c: m(c.x.to("meta")),
               r"^deeprnn\.{op}: all parameters must be on the device of input \(meta\), got "
               r"cpu for parameter 0 \(weight_ih_l0\)$"),
    ModuleCase("hx_on_meta", _forward(lambda c: c.x, lambda c: c.h0.to("meta"), lambda c: c.c0),
               r"^deeprnn\.{op}: hx must be on the device of input \(cpu\), got meta$"),
    ModuleCase("param_on_meta", _plain,
               r"^deeprnn\.{op}: all parameters must be on the device of input \(cpu\), got "
               r"meta for parameter 2 \(bias_ih_l0\)$",
               mutate=_set_param("bias_ih_l0", lambda old: Parameter(old.detach().to("meta")))),
    ModuleCase("seq_len_0", lambda m, c: m(c.x[:0]),
               r"^deeprnn\.{op}: input must have at least one time step, got seq_len 0"),
    ModuleCase("seq_len_0_unbatched", lambda m, c: m(c.x[:0, 0]),
               r"^deeprnn\.{op}: input must have at least one time step, got seq_len 0"),
    ModuleCase("param_set_to_none", _plain, r"weight_hh_l0",
               mutate=_set_param("weight_hh_l0", lambda old: None)),
    ModuleCase("param_deleted", _plain, r"weight_hh_l0", mutate=_del_param("weight_hh_l0"),
               torch_nn="runs on with the deleted tensor, which its _flat_weights still holds",
               error=(TypeError, AttributeError, RuntimeError)),
    ModuleCase("weight_ih_1d", _plain,
               r"^deeprnn\.{op}: parameter 0 \(weight_ih_l0\) must be a 2-D tensor of shape "
               r"\({G}\*hidden_size, input_size\), got \({GH},\)$",
               mutate=_set_param("weight_ih_l0", lambda old: Parameter(_rand(old.shape[0])))),
    ModuleCase("weight_ih_l1_width", _plain,
               _param_regex("weight_ih_l1", lambda c: (c.G * H, D * c.P),
                            lambda c: (c.G * H, D * c.P + 3)),
               mutate=_set_param("weight_ih_l1",
                                 lambda old: Parameter(_rand(old.shape[0], old.shape[1] + 3)))),
    ModuleCase("weight_hr_l1_width", _plain,
               _param_regex("weight_hr_l1", lambda c: (P_LSTM, H), lambda c: (P_LSTM, H + 1)),
               modes=("LSTM",),
               mutate=_set_param("weight_hr_l1", lambda old: Parameter(_rand(P_LSTM, H + 1)))),
    # torch.nn reads hx[0] and hx[1]; a plain tensor state is a RuntimeError
    # there, not Python's unpacking error.
    ModuleCase("lstm_state_single_tensor", lambda m, c: m(c.x, c.h0), r"hx|h_0|hidden",
               modes=("LSTM",)),
    ModuleCase("lstm_state_one_tuple", lambda m, c: m(c.x, (c.h0,)), r"hx|h_0|hidden|index",
               modes=("LSTM",)),
    ModuleCase("single_state_given_a_tuple", lambda m, c: m(c.x, (c.h0,)),
               r"'tuple' object has no attribute 'dim'", modes=SINGLE_STATE),
    # Attributes changed after construction, out of step with the parameters.
    ModuleCase("dropout_attribute_nan", _plain,
               r"^deeprnn\.{op}: dropout must be in \[0, 1\], got nan$",
               mutate=_set_attr("dropout", math.nan)),
    ModuleCase("num_layers_attribute_3", _plain,
               r"^deeprnn\.{op}: expected 24 parameter tensors .*got (20|16)$",
               mutate=_set_attr("num_layers", 3)),
    ModuleCase("bias_attribute_false", _plain,
               r"^deeprnn\.{op}: expected 8 parameter tensors .*got (20|16)$",
               mutate=_set_attr("bias", False)),
]


def _attempt(case, module, c):
    undo = case.mutate(module, c) if case.mutate else (lambda: None)
    try:
        case.run(module, c)
    except Exception as error:  # the error is what we look at
        return error
    finally:
        undo()
    return None


@pytest.mark.parametrize("case,mode", _params_of(MODULE_CASES))
def test_module(case, mode):
    c = Ctx(mode)
    ours = _attempt(case, c.ours, c)
    theirs = _attempt(case, c.reference, c)
    assert ours is not None, "deeprnn accepted the bad input"
    _assert_message(ours, _expected_regex(case.match, c))
    if case.torch_nn is None:
        assert theirs is not None, "torch.nn accepts this input: say how it differs"
        assert type(ours) is type(theirs), (
            f"deeprnn raised {type(ours).__name__}: {ours}; torch.nn raised "
            f"{type(theirs).__name__}: {theirs}")
    else:
        assert isinstance(ours, case.error), repr(ours)
    c.assert_module_still_works()


# ------------------------------------------------------------- constructors


@dataclass
class CtorCase:
    id: str
    kwargs: dict
    match: str  # regex for our message; the type must be torch.nn's
    modes: Tuple[str, ...] = tuple(MODES)


CTOR_CASES = [
    CtorCase("dropout_nan", dict(dropout=math.nan),
             r"^dropout should be a number in range \[0, 1\]"),
    CtorCase("dropout_inf", dict(dropout=math.inf),
             r"^dropout should be a number in range \[0, 1\]"),
    CtorCase("hidden_size_minus_5", dict(hidden_size=-5),
             r"^hidden_size must be greater than zero$"),
    CtorCase("input_size_minus_3", dict(input_size=-3), r"^input_size must be greater than zero$"),
    CtorCase("hidden_size_float", dict(hidden_size=6.0),
             r"^hidden_size should be of type int, got: float$"),
    CtorCase("num_layers_float", dict(num_layers=1.5),
             r"'float' object cannot be interpreted as an integer"),
    CtorCase("num_layers_none", dict(num_layers=None), r"'<=' not supported"),
    CtorCase("proj_size_float", dict(proj_size=2.5), r"argument 'size'", modes=("LSTM",)),
    CtorCase("dtype_int64", dict(dtype=torch.int64),
             r"Only Tensors of floating point and complex dtype can require gradients"),
    CtorCase("misspelled_keyword", dict(num_layer=2), r"unexpected keyword argument 'num_layer'"),
]


@pytest.mark.parametrize("case,mode", _params_of(CTOR_CASES))
def test_constructor(case, mode):
    torch_cls, our_cls = classes(mode)
    kwargs = module_kwargs(mode, input_size=IN, hidden_size=H)
    kwargs.update(case.kwargs)
    with pytest.raises(Exception) as theirs:
        torch_cls(**kwargs)
    with pytest.raises(Exception) as ours:
        our_cls(**kwargs)
    assert ours.type is theirs.type, (ours.value, theirs.value)
    _assert_message(ours.value, case.match)


# ------------------------------------------- absurd sizes, in a child process


@dataclass
class AbsurdCase:
    id: str
    kwargs: dict  # constructor arguments; None: the op on a huge expanded input
    modes: Tuple[str, ...] = tuple(MODES)


ABSURD_CASES = [
    AbsurdCase("hidden_size_2_pow_40", dict(hidden_size=2 ** 40)),
    AbsurdCase("input_size_2_pow_40", dict(input_size=2 ** 40)),
    AbsurdCase("hidden_size_2_pow_62", dict(hidden_size=2 ** 62)),
    AbsurdCase("input_size_2_pow_62", dict(input_size=2 ** 62)),
    AbsurdCase("hidden_size_2_pow_31_proj_1", dict(hidden_size=2 ** 31, proj_size=1),
               modes=("LSTM",)),
    # 2**40 (step, batch) positions that take no memory (a stride-0 view):
    # the output cannot be allocated.
    AbsurdCase("op_expanded_input_2_pow_40_positions", None, modes=("LSTM", "GRU")),
]
ABSURD_MESSAGE = r"allocate|[Oo]verflow"


def _error_record(fn):
    try:
        fn()
    except Exception as error:
        return [type(error).__name__, str(error).split("\nException raised from")[0]]
    return None


def _absurd_results():
    """Runs every absurd case; {case-mode: {"ours": record, "torch_nn": record,
    "after": record}}, where a record is [type, message] or None (no error)."""
    results = {}
    for case in ABSURD_CASES:
        for mode in case.modes:
            entry = {}
            if case.kwargs is None:
                c = Ctx(mode)
                huge = _rand(1, 1, IN).expand(2 ** 20, 2 ** 20, IN)
                entry["ours"] = _error_record(
                    lambda: c.call(input=huge, hx=None, cx=None))
                entry["after"] = _error_record(c.assert_op_still_works)
            else:
                torch_cls, our_cls = classes(mode)
                kwargs = module_kwargs(mode, input_size=IN, hidden_size=H)
                kwargs.update(case.kwargs)
                entry["torch_nn"] = _error_record(lambda: torch_cls(**kwargs))
                entry["ours"] = _error_record(lambda: our_cls(**kwargs))
                entry["after"] = _error_record(Ctx(mode).assert_module_still_works)
            results[f"{case.id}-{mode}"] = entry
    return results


@pytest.fixture(scope="module")
def absurd_results():
    proc = _run_child("absurd")
    _expect_child_passes(proc)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case,mode", _params_of(ABSURD_CASES))
def test_absurd_size(case, mode, absurd_results):
    entry = absurd_results[f"{case.id}-{mode}"]
    assert entry["ours"] is not None, "deeprnn accepted the absurd size"
    kind, message = entry["ours"]
    assert re.search(ABSURD_MESSAGE, message), (kind, message)
    if "torch_nn" in entry:
        assert entry["torch_nn"] is not None and kind == entry["torch_nn"][0], entry
    assert entry["after"] is None, entry["after"]


# ---------------------------------------------------------- child processes

_CHILD = r"""
import importlib.util, os, resource, sys
tests_dir, package_init, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = importlib.util.spec_from_file_location(
    "deeprnn", package_init, submodule_search_locations=[os.path.dirname(package_init)])
package = importlib.util.module_from_spec(spec)
sys.modules["deeprnn"] = package
spec.loader.exec_module(package)
sys.path.insert(0, tests_dir)
import test_bad_inputs
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
if hard != resource.RLIM_INFINITY:
    limit = min(limit, hard)
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
test_bad_inputs._child_main(sys.argv[4:])
"""


def _child_main(argv):
    if argv[0] == "op":
        _check_op_case({case.id: case for case in OP_CASES}[argv[1]], argv[2])
        print("PASS")
    else:
        print(json.dumps(_absurd_results()))


def _run_child(*args):
    env = dict(os.environ, DEEPRNN_LIBRARY=os.path.abspath(deeprnn._library_path))
    command = [sys.executable, "-c", _CHILD, os.path.dirname(os.path.abspath(__file__)),
               os.path.abspath(deeprnn.__file__), str(CHILD_ADDRESS_SPACE), *args]
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args)}: no answer in {CHILD_TIMEOUT_S} s (a hang)")


def _expect_child_passes(proc):
    tail = (proc.stdout + proc.stderr)[-3000:]
    if proc.returncode < 0:
        pytest.fail(f"the child process died by signal {-proc.returncode} (a crash):\n{tail}")
    if proc.returncode != 0:
        pytest.fail(f"the child process failed (exit code {proc.returncode}):\n{tail}")


def test_catalogue_ids_are_unique():
    for table in (OP_CASES, MODULE_CASES, CTOR_CASES, ABSURD_CASES):
        ids = [case.id for case in table]
        assert len(ids) == len(set(ids)), ids
