"""Shared helpers for the deeprnn Python tests."""

import os
import subprocess
import sys

import torch

import deeprnn

MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]

# The public operator of each mode, and its name inside _rnn_forward.
OP_NAMES = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def cuda_skip_reason():
    """Why the CUDA variant of a test cannot run here, or None."""
    if not torch.cuda.is_available():
        return "CUDA is not available (torch.cuda.is_available() is False)"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("deeprnn::_rnn_forward", "CUDA"):
        return "this deeprnn build has no CUDA kernels"
    return None


def python_with_variable(code, variable, value):
    """Runs ``code`` in a fresh Python that loads the library the tests load,
    with the environment variable ``variable`` unset (``value`` None) or set
    to ``value``; returns the subprocess.CompletedProcess (text output)."""
    env = dict(os.environ, DEEPRNN_LIBRARY=os.path.abspath(deeprnn._library_path))
    env.pop(variable, None)
    if value is not None:
        env[variable] = value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)


def module_kwargs(mode, **kwargs):
    """Constructor keywords for the classes of ``mode``."""
    kwargs = dict(kwargs)
    if mode == "RNN_TANH":
        kwargs["nonlinearity"] = "tanh"
    elif mode == "RNN_RELU":
        kwargs["nonlinearity"] = "relu"
    if mode != "LSTM":
        kwargs.pop("proj_size", None)
    return kwargs


def classes(mode):
    """(torch.nn class, deeprnn class) for ``mode``."""
    if mode == "LSTM":
        return torch.nn.LSTM, deeprnn.LSTM
    if mode == "GRU":
        return torch.nn.GRU, deeprnn.GRU
    return torch.nn.RNN, deeprnn.RNN


def make_pair(mode, dtype=torch.float64, **kwargs):
    """A torch.nn module and a deeprnn module with the same weights.

    The weights are torch.nn's fresh initialisation, loaded into ours through
    ``state_dict`` (the drop-in path a user takes).
    """
    kwargs = module_kwargs(mode, **kwargs)
    torch_cls, our_cls = classes(mode)
    reference = torch_cls(**kwargs, dtype=dtype)
    ours = our_cls(**kwargs, dtype=dtype)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def state_sizes(mode, num_layers, bidirectional, hidden_size, proj_size):
    """(shape tail of hx, shape tail of cx or None): (L*D, P), (L*D, H)."""
    rows = num_layers * (2 if bidirectional else 1)
    out = proj_size if (mode == "LSTM" and proj_size > 0) else hidden_size
    return (rows, out), ((rows, hidden_size) if mode == "LSTM" else None)


def random_states(mode, batch, num_layers, bidirectional, hidden_size, proj_size, dtype):
    """Fresh random (h0, c0) with batch ``batch`` (c0 None outside LSTM)."""
    (rows, out), cell = state_sizes(mode, num_layers, bidirectional, hidden_size, proj_size)
    h0 = torch.randn(rows, batch, out, dtype=dtype)
    c0 = torch.randn(rows, batch, cell[1], dtype=dtype) if cell is not None else None
    return h0, c0


def call(module, mode, x, h0=None, c0=None):
    """Runs a module; returns the flat list [output, hy] or [output, hy, cy]."""
    if mode == "LSTM":
        if h0 is None:
            output, (hy, cy) = module(x)
        else:
            output, (hy, cy) = module(x, (h0, c0))
        return [output, hy, cy]
    if h0 is None:
        output, hy = module(x)
    else:
        output, hy = module(x, h0)
    return [output, hy]


def norm_ratio(value, reference):
    """|value - reference| / |reference|, computed in float64."""
    value = value.detach().double()
    reference = reference.detach().double()
    return ((value - reference).norm() / reference.norm()).item()


def op_args(mode, x, h0, c0, params, has_biases, num_layers, dropout, train,
            bidirectional, batch_first):
    """The argument tuple of the public operator of ``mode``."""
    tail = (params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    if mode == "LSTM":
        return (x, h0, c0) + tail
    return (x, h0) + tail


def public_op(mode):
    return getattr(torch.ops.deeprnn, OP_NAMES[mode])
