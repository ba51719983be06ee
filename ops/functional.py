"""Functional API of deeprnn: typed wrappers over ``torch.ops.deeprnn.*``.

Every function here calls one operator through the PyTorch dispatcher, so
autograd, device dispatch and TorchScript see the operator itself; each is
scriptable with ``torch.jit.script``.

Shapes used below (T steps, B batch, I input size, H hidden size,
P = proj_size or H, D = 2 if bidirectional else 1, L = num_layers,
G = 4 for LSTM, 3 for GRU, 1 for the plain RNNs):

* ``input``: ``(T, B, I)``, or ``(B, T, I)`` with ``batch_first``. Only 3-D
  input is accepted; the modules handle unbatched 2-D input themselves.
* ``hx``: ``(L*D, B, P)``; ``cx`` (LSTM): ``(L*D, B, H)``. Row ``l*D + d``
  holds layer ``l``, direction ``d`` (forward before reverse). ``None`` means
  zeros.
* ``params``: per layer, per direction, in exactly the order of
  ``torch.nn.LSTM._flat_weights`` (and GRU, RNN): ``w_ih (G*H, I_l)``,
  ``w_hh (G*H, P)``, then ``b_ih (G*H)`` and ``b_hh (G*H)`` when
  ``has_biases``, then ``w_hr (P, H)`` for an LSTM with projection (the
  projection is recognised by the presence of ``w_hr``). ``I_0 = I`` and
  ``I_l = D*P`` for ``l > 0``.
* ``output``: ``(T, B, D*P)`` (``(B, T, D*P)`` with ``batch_first``), the
  last layer's hidden states, forward direction in the first half.
* ``hy``/``cy``: the final states, shaped like ``hx``/``cx``.

Gate order: LSTM ``i, f, g, o``; GRU ``r, z, n`` with
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` and
``h' = (1 - z) * n + z * h``, as in torch.nn.

``lengths`` (optional, int64 ``(B)``, each in ``1..T``, in any order) makes
the batch variable-length, as a ``PackedSequence`` does in torch.nn but on the
padded tensor: past its length a sequence's state stays unchanged and its
output is zero; ``hy``/``cy`` hold each sequence's state at its last valid
step; the reverse direction starts there; padded input is ignored (its
gradient is zero). ``lengths`` may be on the CPU or on the input's device;
on the CPU the kernels read it without synchronising with the device.
Lengths sorted in decreasing order save one reordering of the batch.

``dropout`` is applied to the output of every layer but the last, only when
``train`` is true; the masks come from PyTorch's default generator, so
``torch.manual_seed`` reproduces a run.

Invalid arguments raise ``RuntimeError`` with a message that starts with the
operator's name (for example ``deeprnn.lstm: hx must have shape ...``).
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["lstm", "gru", "rnn_tanh", "rnn_relu", "reserve_size"]


def lstm(
    input: Tensor,
    hx: Optional[Tensor],
    cx: Optional[Tensor],
    params: List[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
    lengths: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Multi-layer LSTM (with optional projection), like ``torch._VF.lstm``.

    Args:
        input: ``(T, B, I)``, or ``(B, T, I)`` if ``batch_first``.
        hx: initial hidden state ``(L*D, B, P)`` or ``None`` for zeros.
        cx: initial cell state ``(L*D, B, H)`` or ``None`` for zeros.
        params: ``w_ih, w_hh, [b_ih, b_hh], [w_hr]`` per layer and direction,
            in ``torch.nn.LSTM._flat_weights`` order.
        has_biases: whether ``params`` holds the two bias vectors.
        num_layers: number of stacked layers (>= 1).
        dropout: probability in ``[0, 1]`` of zeroing an element of a layer's
            output before the next layer (not after the last one).
        train: dropout only acts when true.
        bidirectional: run a reverse direction too (``D = 2``).
        batch_first: ``input`` and ``output`` are batch-major.
        lengths: optional int64 ``(B)``: sequence ``b`` has ``lengths[b]``
            valid steps (``1..T``, any order). See the module docstring.

    Returns:
        ``(output, hy, cy)``: ``output (T, B, D*P)`` (batch-major if
        ``batch_first``), ``hy (L*D, B, P)``, ``cy (L*D, B, H)``.
    """
    return torch.ops.deeprnn.lstm(
        input,
        hx,
        cx,
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
        lengths,
    )


def gru(
    input: Tensor,
    hx: Optional[Tensor],
    params: List[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
    lengths: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Multi-layer GRU, like ``torch._VF.gru``.

    Args:
        input: ``(T, B, I)``, or ``(B, T, I)`` if ``batch_first``.
        hx: initial hidden state ``(L*D, B, H)`` or ``None`` for zeros.
        params: ``w_ih (3H, I_l), w_hh (3H, H), [b_ih (3H), b_hh (3H)]`` per
            layer and direction, in ``torch.nn.GRU._flat_weights`` order.
        has_biases, num_layers, dropout, train, bidirectional, batch_first,
        lengths: as in :func:`lstm`.

    Returns:
        ``(output, hy)``: ``output (T, B, D*H)`` (batch-major if
        ``batch_first``) and ``hy (L*D, B, H)``.
    """
    return torch.ops.deeprnn.gru(
        input,
        hx,
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
        lengths,
    )


def rnn_tanh(
    input: Tensor,
    hx: Optional[Tensor],
    params: List[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
    lengths: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Multi-layer Elman RNN with tanh, like ``torch._VF.rnn_tanh``.

    ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``. Arguments and results as in
    :func:`gru`, with ``G = 1``: ``w_ih (H, I_l), w_hh (H, H), [b_ih (H),
    b_hh (H)]``.
    """
    return torch.ops.deeprnn.rnn_tanh(
        input,
        hx,
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
        lengths,
    )


def rnn_relu(
    input: Tensor,
    hx: Optional[Tensor],
    params: List[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
    lengths: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Multi-layer Elman RNN with ReLU, like ``torch._VF.rnn_relu``.

    ``h' = relu(W_ih x + b_ih + W_hh h + b_hh)``. Arguments and results as in
    :func:`rnn_tanh`.
    """
    return torch.ops.deeprnn.rnn_relu(
        input,
        hx,
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
        lengths,
    )


def reserve_size(
    mode: str,
    seq_len: int,
    batch: int,
    input_size: int,
    hidden_size: int,
    proj_size: int,
    num_layers: int,
    bidirectional: bool,
    with_dropout: bool,
) -> int:
    """Number of elements (of the input's dtype) a training forward keeps.

    This is the size of the reserve that the forward pass saves for the
    backward pass (gate activations, LSTM cell states, each layer's output,
    dropout masks) when a gradient will be taken.

    Args:
        mode: ``"lstm"``, ``"gru"``, ``"rnn_tanh"`` or ``"rnn_relu"``.
        seq_len, batch, input_size, hidden_size: ``T, B, I, H``.
        proj_size: LSTM projection size, 0 for none.
        num_layers: number of stacked layers.
        bidirectional: two directions.
        with_dropout: whether dropout masks are kept (``train`` and
            ``dropout > 0`` and ``num_layers > 1``).
    """
    return torch.ops.deeprnn.reserve_size(
        mode,
        seq_len,
        batch,
        input_size,
        hidden_size,
        proj_size,
        num_layers,
        bidirectional,
        with_dropout,
    )
