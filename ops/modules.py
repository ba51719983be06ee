"""deeprnn.RNN, deeprnn.GRU and deeprnn.LSTM: drop-ins for torch.nn's.

Same constructor arguments, attributes, parameter names, order, shapes and
initialisation, ``state_dict`` keys, ``repr`` and forward signature as
``torch.nn.RNN/GRU/LSTM``, so that ``deeprnn.LSTM(**kw).load_state_dict(
torch.nn.LSTM(**kw).state_dict())`` computes the same function. The work is
done by the ``torch.ops.deeprnn`` operators.

Variable-length batches come in two ways:

* a ``torch.nn.utils.rnn.PackedSequence`` (from ``pack_padded_sequence``,
  sorted or not, or ``pack_sequence``): a ``PackedSequence`` comes out, laid
  out, and with its ``hx``/``hy`` in the caller's batch order, exactly as in
  torch.nn;
* a padded tensor with ``lengths=`` (int64 ``(batch)``, any order, or a list
  of ints in eager mode): no packing at all; the output is padded, zero past
  each sequence's end, and ``h_n``/``c_n`` hold each sequence's state at its
  last valid step.

Both run the operators' ``lengths`` argument. Under ``torch.jit.script`` a
module's ``forward`` has one signature, and here it is the tensor one (with
``lengths``), so that a scripted module runs on its own and after
``torch.jit.load``; scripted code passes a ``PackedSequence`` to
``forward_packed``.

The common base is our own ``_RNNBase(torch.nn.Module)`` and deliberately not
``torch.nn.RNNBase``: torch.compile breaks the graph on any instance of
``torch.nn.RNNBase``, and these modules must compile into one graph.
"""

import math
import numbers
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import init
from torch.nn.parameter import Parameter
from torch.nn.utils.rnn import PackedSequence

__all__ = ["RNN", "GRU", "LSTM"]

_GATE_COUNT = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _packed_layout(batch_sizes: Tensor, device: torch.device) -> Tuple[Tensor, Tensor]:
    """(lengths, index) of a PackedSequence's data in a padded (T, B) batch.

    The packed data lies time-major in sorted order: step t holds sequences
    0..batch_sizes[t]-1. ``lengths`` (int64, CPU) is therefore sorted
    descending, which the operators take without permuting, and ``index``
    gives, for each packed row, its row in the padded batch flattened to
    (T*B): padding and unpadding are then one index_copy / index_select each
    instead of torch's per-step copies.
    """
    batch = int(batch_sizes[0])
    rows = torch.arange(batch, device=batch_sizes.device)
    valid = rows.unsqueeze(0) < batch_sizes.unsqueeze(1)
    lengths = valid.sum(0)
    index = valid.reshape(-1).nonzero().squeeze(1).to(device)
    return lengths, index


def _reject_extra_kwargs(name: str, kwargs) -> None:
    # RNN and GRU take no proj_size; torch.nn says so with a ValueError, and
    # any other unknown keyword is a TypeError, as for any Python function.
    if "proj_size" in kwargs:
        raise ValueError(
            "proj_size argument is only supported for LSTM, not RNN or GRU"
        )
    if kwargs:
        raise TypeError(
            f"{name}.__init__() got an unexpected keyword argument "
            f"'{next(iter(kwargs))}'"
        )


class _RNNBase(torch.nn.Module):
    """What RNN, GRU and LSTM share: arguments, parameters and checks.

    Mirrors the public surface of ``torch.nn.RNNBase``: the attributes below,
    ``_flat_weights_names`` (parameter names in operator order),
    ``_all_weights`` (the names per layer and direction), ``_flat_weights``
    (the parameters in operator order, kept in step with the attributes when
    a parameter is replaced or the module is converted), ``all_weights``,
    ``flatten_parameters()`` (a no-op here) and ``reset_parameters()``.
    """

    __constants__ = [
        "mode",
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
    ]
    __jit_unused_properties__ = ["all_weights"]

    mode: str
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool
    proj_size: int

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        # The same checks, in the same order and with the same exceptions and
        # messages, as torch.nn.RNNBase, so that code written against
        # torch.nn sees no difference.
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] "
                "representing the probability of an element being "
                "zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last "
                "recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=3,
            )
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(
                "batch_first should be of type bool, got: "
                f"{type(batch_first).__name__}"
            )
        if not isinstance(input_size, int):
            raise TypeError(
                f"input_size should be of type int, got: {type(input_size).__name__}"
            )
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int):
            raise TypeError(
                "hidden_size should be of type int, got: "
                f"{type(hidden_size).__name__}"
            )
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError(
                "proj_size should be a positive integer or zero to disable projections"
            )
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if mode not in _GATE_COUNT:
            raise ValueError("Unrecognized RNN mode: " + mode)

        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size

        factory_kwargs = {"device": device, "dtype": dtype}
        gate_size = _GATE_COUNT[mode] * hidden_size
        out_size = proj_size if proj_size > 0 else hidden_size
        num_directions = 2 if bidirectional else 1

        flat_names: List[str] = []
        all_names: List[List[str]] = []
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else out_size * num_directions
            for direction in range(num_directions):
                suffix = "_reverse" if direction == 1 else ""
                shapes = [
                    ("weight_ih", (gate_size, layer_input_size)),
                    ("weight_hh", (gate_size, out_size)),
                ]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size > 0:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                names = []
                for prefix, shape in shapes:
                    name = f"{prefix}_l{layer}{suffix}"
                    setattr(self, name, Parameter(torch.empty(shape, **factory_kwargs)))
                    names.append(name)
                flat_names.extend(names)
                all_names.append(names)
        self._flat_weights_names = flat_names
        self._all_weights = all_names
        self._init_flat_weights()
        self.reset_parameters()

    # ----------------------------------------------------------- parameters

    def _init_flat_weights(self) -> None:
        self._flat_weights = [
            getattr(self, name) if hasattr(self, name) else None
            for name in self._flat_weights_names
        ]

    def __setattr__(self, attr, value) -> None:
        # Keeps _flat_weights in step when a parameter is replaced, as
        # torch.nn.RNNBase does (module.weight_ih_l0 = Parameter(...)).
        names = self.__dict__.get("_flat_weights_names")
        if names is not None and attr in names:
            self._flat_weights[names.index(attr)] = value
        super().__setattr__(attr, value)

    def _apply(self, fn, recurse=True):
        # .to(), .double(), .cuda() ... may put new tensors in place of the
        # parameters; rebuild the list from the attributes afterwards.
        result = super()._apply(fn, recurse)
        self._init_flat_weights()
        return result

    def _replicate_for_data_parallel(self):
        replica = super()._replicate_for_data_parallel()
        # The replica must not share (and then overwrite) our lists.
        replica._flat_weights = replica._flat_weights[:]
        replica._flat_weights_names = replica._flat_weights_names[:]
        return replica

    @torch.jit.unused
    def _current_flat_weights(self) -> List[Tensor]:
        # Read from the attributes on every call rather than trusting the
        # cached list, so that parameters swapped in without __setattr__
        # (torch.func.functional_call, stateless reparametrisation) are used.
        weights = [getattr(self, name, None) for name in self._flat_weights_names]
        for name, weight in zip(self._flat_weights_names, weights):
            if not isinstance(weight, Tensor):
                missing = "was deleted" if weight is None and not hasattr(self, name) else (
                    f"is {type(weight).__name__}")
                raise TypeError(
                    f"{type(self).__name__}: the parameter {name} must be a Tensor, but it "
                    f"{missing}"
                )
        return weights

    def _forward_weights(self) -> List[Tensor]:
        """The parameters a forward runs with."""
        if torch.jit.is_scripting():
            return self._flat_weights
        return self._current_flat_weights()

    @torch.jit.unused
    def _lengths_as_tensor(self, lengths: Optional[Tensor]) -> Optional[Tensor]:
        # Eager mode also takes a list or tuple of ints, as
        # pack_padded_sequence does; TorchScript's signature says Tensor.
        if lengths is None or isinstance(lengths, Tensor):
            return lengths
        name = self._display_name()
        if not isinstance(lengths, (list, tuple)):
            raise TypeError(
                f"deeprnn.{name}: lengths must be an int64 tensor or a list of ints, "
                f"got {type(lengths).__name__}"
            )
        for value in lengths:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(
                    f"deeprnn.{name}: lengths must be an int64 tensor or a list of "
                    f"ints, got a {type(lengths).__name__} holding "
                    f"{type(value).__name__}"
                )
        return torch.tensor(lengths, dtype=torch.int64)

    def _check_lengths(
        self, lengths: Optional[Tensor], is_batched: bool
    ) -> Optional[Tensor]:
        """lengths as the operators take it; refuses it for unbatched input."""
        if lengths is None:
            return None
        if not torch.jit.is_scripting():
            lengths = self._lengths_as_tensor(lengths)
        if not is_batched:
            raise ValueError(
                f"deeprnn.{self._display_name()}: lengths needs batched 3-D input, "
                "got unbatched 2-D input (one sequence has no lengths to give)"
            )
        return lengths

    def _refuse_lengths_with_packed(self, lengths: Optional[Tensor]) -> None:
        if lengths is not None:
            raise ValueError(
                f"deeprnn.{self._display_name()}: lengths must be None for "
                "PackedSequence input, which carries its own lengths"
            )

    def flatten_parameters(self) -> None:
        """Does nothing: the operators use the parameters where they are.

        Kept so that code written for torch.nn (which calls it to make cuDNN
        happy) runs unchanged, in eager mode and in TorchScript.
        """
        return None

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    @property
    def all_weights(self) -> List[List[Parameter]]:
        return [
            [getattr(self, weight) for weight in weights]
            for weights in self._all_weights
        ]

    # --------------------------------------------------------------- checks

    @torch.jit.unused
    def _check_input_dtype(self, input: Tensor) -> None:
        first = getattr(self, self._flat_weights_names[0], None)
        if first is None:
            return
        if input.dtype != first.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype "
                f"({first.dtype}). Convert input: input.to({first.dtype}), or "
                f"convert model: model.to({input.dtype})"
            )

    def check_input(self, input: Tensor, batch_sizes: Optional[Tensor]) -> None:
        if not torch.jit.is_scripting():
            self._check_input_dtype(input)
        expected_input_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_input_dim:
            raise RuntimeError(
                f"input must have {expected_input_dim} dimensions, got {input.dim()}"
            )
        if self.input_size != input.size(-1):
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. Expected "
                f"{self.input_size}, got {input.size(-1)}"
            )

    def get_expected_hidden_size(
        self, input: Tensor, batch_sizes: Optional[Tensor]
    ) -> Tuple[int, int, int]:
        if batch_sizes is not None:
            mini_batch = int(batch_sizes[0])
        else:
            mini_batch = input.size(0) if self.batch_first else input.size(1)
        num_directions = 2 if self.bidirectional else 1
        out_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (self.num_layers * num_directions, mini_batch, out_size)

    def check_hidden_size(
        self,
        hx: Tensor,
        expected_hidden_size: Tuple[int, int, int],
        msg: str = "Expected hidden size {}, got {}",
    ) -> None:
        size = hx.size()
        if (
            len(size) != 3
            or size[0] != expected_hidden_size[0]
            or size[1] != expected_hidden_size[1]
            or size[2] != expected_hidden_size[2]
        ):
            raise RuntimeError(msg.format(expected_hidden_size, list(size)))

    def check_forward_args(
        self, input: Tensor, hidden: Tensor, batch_sizes: Optional[Tensor]
    ) -> None:
        self.check_input(input, batch_sizes)
        expected_hidden_size = self.get_expected_hidden_size(input, batch_sizes)
        self.check_hidden_size(hidden, expected_hidden_size)

    def permute_hidden(self, hx: Tensor, permutation: Optional[Tensor]) -> Tensor:
        if permutation is None:
            return hx
        return hx.index_select(1, permutation)

    # ----------------------------------------------------------------- misc

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    def _run(
        self,
        input: Tensor,
        hx: Optional[Tensor],
        cx: Optional[Tensor],
        weights: List[Tensor],
        batch_first: bool,
        lengths: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """The operator of this mode on batched input: (output, hy, cy).

        cy is hy again outside LSTM (where cx is ignored).
        """
        if self.mode == "LSTM":
            return torch.ops.deeprnn.lstm(
                input,
                hx,
                cx,
                weights,
                self.bias,
                self.num_layers,
                self.dropout,
                self.training,
                self.bidirectional,
                batch_first,
                lengths,
            )
        if self.mode == "GRU":
            output, hy = torch.ops.deeprnn.gru(
                input,
                hx,
                weights,
                self.bias,
                self.num_layers,
                self.dropout,
                self.training,
                self.bidirectional,
                batch_first,
                lengths,
            )
        elif self.mode == "RNN_TANH":
            output, hy = torch.ops.deeprnn.rnn_tanh(
                input,
                hx,
                weights,
                self.bias,
                self.num_layers,
                self.dropout,
                self.training,
                self.bidirectional,
                batch_first,
                lengths,
            )
        else:
            output, hy = torch.ops.deeprnn.rnn_relu(
                input,
                hx,
                weights,
                self.bias,
                self.num_layers,
                self.dropout,
                self.training,
                self.bidirectional,
                batch_first,
                lengths,
            )
        return output, hy, hy

    def _run_packed(
        self,
        data: Tensor,
        batch_sizes: Tensor,
        hx: Optional[Tensor],
        cx: Optional[Tensor],
        weights: List[Tensor],
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Runs a PackedSequence's data; all in its sorted batch order.

        Returns the packed output data, hy and cy (hy again outside LSTM).
        """
        lengths, index = _packed_layout(batch_sizes, data.device)
        steps = batch_sizes.size(0)
        batch = lengths.size(0)
        # Padding is never read by the operators; zeros keep it harmless.
        padded = data.new_zeros(steps * batch, data.size(1)).index_copy_(0, index, data)
        output, hy, cy = self._run(
            padded.view(steps, batch, data.size(1)),
            hx,
            cx,
            weights,
            False,
            lengths,
        )
        output = output.reshape(steps * batch, output.size(2)).index_select(0, index)
        return output, hy, cy

    def _single_state_forward(
        self,
        input: Tensor,
        hx: Optional[Tensor],
        weights: List[Tensor],
        lengths: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor]:
        # RNN and GRU: one state tensor. Unbatched (2-D) input and hx are
        # handled exactly as torch.nn handles them.
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(
                f"{self._display_name()}: Expected input to be 2D or 3D, got "
                f"{input.dim()}D {self._dim_message_tail()}"
            )
        is_batched = input.dim() == 3
        lengths = self._check_lengths(lengths, is_batched)
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                if hx.dim() != 2:
                    raise RuntimeError(
                        "For unbatched 2-D input, hx should also be 2-D but got "
                        f"{hx.dim()}-D tensor"
                    )
                hx = hx.unsqueeze(1)
        else:
            if hx is not None and hx.dim() != 3:
                raise RuntimeError(
                    "For batched 3-D input, hx should also be 3-D but got "
                    f"{hx.dim()}-D tensor"
                )
        self.check_input(input, None)
        if hx is not None:
            self.check_hidden_size(hx, self.get_expected_hidden_size(input, None))

        output, hy, _ = self._run(input, hx, None, weights, self.batch_first, lengths)
        if not is_batched:
            output = output.squeeze(batch_dim)
            hy = hy.squeeze(1)
        return output, hy

    def _single_state_packed(
        self, input: PackedSequence, hx: Optional[Tensor], weights: List[Tensor]
    ) -> Tuple[PackedSequence, Tensor]:
        # As torch.nn: hx comes in the caller's batch order and goes to the
        # sorted order before the checks; hy goes back.
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if hx is None:
            self.check_input(data, batch_sizes)
        else:
            hx = self.permute_hidden(hx, sorted_indices)
            self.check_forward_args(data, hx, batch_sizes)
        output, hy, _ = self._run_packed(data, batch_sizes, hx, None, weights)
        return (
            PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices),
            self.permute_hidden(hy, unsorted_indices),
        )

    def _display_name(self) -> str:
        if self.mode == "LSTM":
            return "LSTM"
        if self.mode == "GRU":
            return "GRU"
        return "RNN"

    def _dim_message_tail(self) -> str:
        # torch.nn words this message slightly differently for RNN.
        if self.mode == "RNN_TANH" or self.mode == "RNN_RELU":
            return "tensor instead"
        return "instead"


class RNN(_RNNBase):
    r"""Multi-layer Elman RNN with tanh or ReLU; a drop-in for torch.nn.RNN.

    ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or ReLU).

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of the hidden state ``h``.
        num_layers: number of stacked layers. Default: 1.
        nonlinearity: ``'tanh'`` or ``'relu'``. Default: ``'tanh'``.
        bias: use ``b_ih`` and ``b_hh``. Default: True.
        batch_first: input and output are ``(batch, seq, feature)``.
        dropout: dropout probability on the outputs of every layer but the
            last, in training. Default: 0.
        bidirectional: add a reverse direction. Default: False.
        device, dtype: where and in which dtype to create the parameters.

    Inputs: ``input, hx=None, lengths=None``.

    * ``input``: ``(L, H_in)``, ``(L, N, H_in)`` or with ``batch_first``
      ``(N, L, H_in)``; or a ``torch.nn.utils.rnn.PackedSequence``.
    * ``hx``: ``(D*num_layers, H_out)`` or ``(D*num_layers, N, H_out)``,
      zeros if absent; in the caller's batch order, also for a
      ``PackedSequence``.
    * ``lengths``: for a padded batched tensor, int64 ``(N)`` (or, in eager
      mode, a list of ints), each in ``1..L``, any order: sequence ``b`` ends
      after ``lengths[b]`` steps, as if packed. Must be None otherwise.

    Outputs: ``(output, h_n)`` shaped as in torch.nn.RNN; a
    ``PackedSequence`` when the input is one. With ``lengths``, ``output`` is
    zero past each sequence's end and ``h_n`` holds each sequence's state at
    its last valid step, exactly what a ``PackedSequence`` gives.

    In TorchScript, ``forward`` takes tensors only (a scripted module's
    ``forward`` has one signature); :meth:`forward_packed` takes a
    ``PackedSequence`` there (and in eager mode).
    """

    nonlinearity: str

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        _reject_extra_kwargs("RNN", kwargs)
        if nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(
            mode,
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
        )
        self.nonlinearity = nonlinearity

    def forward(
        self,
        input: Tensor,
        hx: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """``(output, h_n)``; a ``PackedSequence`` input gives a ``PackedSequence``.

        TorchScript compiles the tensor signature; see :meth:`forward_packed`.
        """
        weights = self._forward_weights()
        if isinstance(input, PackedSequence):
            self._refuse_lengths_with_packed(lengths)
            return self._single_state_packed(input, hx, weights)
        return self._single_state_forward(input, hx, weights, lengths)

    @torch.jit.export
    def forward_packed(
        self, input: PackedSequence, hx: Optional[Tensor] = None
    ) -> Tuple[PackedSequence, Tensor]:
        """``forward`` for a ``PackedSequence``, callable from TorchScript."""
        return self._single_state_packed(input, hx, self._forward_weights())


class GRU(_RNNBase):
    r"""Multi-layer gated recurrent unit; a drop-in for torch.nn.GRU.

    Gates ``r, z, n`` as in torch.nn.GRU:
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h' = (1 - z) * n + z * h``.

    Args: as :class:`RNN`, without ``nonlinearity``.

    Inputs: ``input, hx=None, lengths=None`` as :class:`RNN`, also
    ``PackedSequence`` input and :meth:`forward_packed`.

    Outputs: ``(output, h_n)`` shaped as in torch.nn.GRU.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        _reject_extra_kwargs("GRU", kwargs)
        super().__init__(
            "GRU",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
        )

    def forward(
        self,
        input: Tensor,
        hx: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """``(output, h_n)``; a ``PackedSequence`` input gives a ``PackedSequence``.

        TorchScript compiles the tensor signature; see :meth:`forward_packed`.
        """
        weights = self._forward_weights()
        if isinstance(input, PackedSequence):
            self._refuse_lengths_with_packed(lengths)
            return self._single_state_packed(input, hx, weights)
        return self._single_state_forward(input, hx, weights, lengths)

    @torch.jit.export
    def forward_packed(
        self, input: PackedSequence, hx: Optional[Tensor] = None
    ) -> Tuple[PackedSequence, Tensor]:
        """``forward`` for a ``PackedSequence``, callable from TorchScript."""
        return self._single_state_packed(input, hx, self._forward_weights())


class LSTM(_RNNBase):
    r"""Multi-layer LSTM, optionally with projections; a drop-in for torch.nn.LSTM.

    Gates ``i, f, g, o`` as in torch.nn.LSTM; with ``proj_size > 0`` the
    hidden state is projected, ``h_t = W_hr (o_t * tanh(c_t))``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout,
        bidirectional, device, dtype: as :class:`RNN`.
        proj_size: if ``> 0``, an LSTM with projections of this size
            (smaller than ``hidden_size``). Default: 0.

    Inputs: ``input, hx=None, lengths=None``; ``input`` and ``lengths`` as
    :class:`RNN` (tensor or ``PackedSequence``); ``hx`` is ``(h_0, c_0)``,
    ``h_0`` ``(D*num_layers, [N,] proj_size or hidden_size)``, ``c_0``
    ``(D*num_layers, [N,] hidden_size)``, zeros if absent.

    Outputs: ``(output, (h_n, c_n))`` shaped as in torch.nn.LSTM (a
    ``PackedSequence`` output for a ``PackedSequence`` input); with
    ``lengths``, ``h_n`` and ``c_n`` at each sequence's last valid step.
    :meth:`forward_packed` takes a ``PackedSequence`` in TorchScript.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            "LSTM",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
        )

    def get_expected_cell_size(
        self, input: Tensor, batch_sizes: Optional[Tensor]
    ) -> Tuple[int, int, int]:
        if batch_sizes is not None:
            mini_batch = int(batch_sizes[0])
        else:
            mini_batch = input.size(0) if self.batch_first else input.size(1)
        num_directions = 2 if self.bidirectional else 1
        return (self.num_layers * num_directions, mini_batch, self.hidden_size)

    def check_forward_args(  # type: ignore[override]
        self,
        input: Tensor,
        hidden: Tuple[Tensor, Tensor],
        batch_sizes: Optional[Tensor],
    ) -> None:
        self.check_input(input, batch_sizes)
        self.check_hidden_size(
            hidden[0],
            self.get_expected_hidden_size(input, batch_sizes),
            "Expected hidden[0] size {}, got {}",
        )
        self.check_hidden_size(
            hidden[1],
            self.get_expected_cell_size(input, batch_sizes),
            "Expected hidden[1] size {}, got {}",
        )

    def permute_hidden(  # type: ignore[override]
        self, hx: Tuple[Tensor, Tensor], permutation: Optional[Tensor]
    ) -> Tuple[Tensor, Tensor]:
        if permutation is None:
            return hx
        return hx[0].index_select(1, permutation), hx[1].index_select(1, permutation)

    def forward(
        self,
        input: Tensor,
        hx: Optional[Tuple[Tensor, Tensor]] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """``(output, (h_n, c_n))``; a ``PackedSequence`` gives a ``PackedSequence``.

        TorchScript compiles the tensor signature; see :meth:`forward_packed`.
        """
        weights = self._forward_weights()
        if isinstance(input, PackedSequence):
            self._refuse_lengths_with_packed(lengths)
            return self._packed(input, hx, weights)

        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(
                f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead"
            )
        is_batched = input.dim() == 3
        lengths = self._check_lengths(lengths, is_batched)
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        h0: Optional[Tensor] = None
        c0: Optional[Tensor] = None
        if hx is None:
            self.check_input(input, None)
        else:
            # Indexed, not unpacked, so that a state that is not a pair fails
            # as it does with torch.nn.LSTM.
            h0 = hx[0]
            c0 = hx[1]
            if is_batched:
                if h0.dim() != 3 or c0.dim() != 3:
                    raise RuntimeError(
                        "For batched 3-D input, hx and cx should also be 3-D but "
                        f"got ({h0.dim()}-D, {c0.dim()}-D) tensors"
                    )
            else:
                if h0.dim() != 2 or c0.dim() != 2:
                    raise RuntimeError(
                        "For unbatched 2-D input, hx and cx should also be 2-D but "
                        f"got ({h0.dim()}-D, {c0.dim()}-D) tensors"
                    )
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1)
            self.check_forward_args(input, (h0, c0), None)

        output, hy, cy = self._run(input, h0, c0, weights, self.batch_first, lengths)
        if not is_batched:
            output = output.squeeze(batch_dim)
            hy = hy.squeeze(1)
            cy = cy.squeeze(1)
        return output, (hy, cy)

    @torch.jit.export
    def forward_packed(
        self, input: PackedSequence, hx: Optional[Tuple[Tensor, Tensor]] = None
    ) -> Tuple[PackedSequence, Tuple[Tensor, Tensor]]:
        """``forward`` for a ``PackedSequence``, callable from TorchScript."""
        return self._packed(input, hx, self._forward_weights())

    def _packed(
        self,
        input: PackedSequence,
        hx: Optional[Tuple[Tensor, Tensor]],
        weights: List[Tensor],
    ) -> Tuple[PackedSequence, Tuple[Tensor, Tensor]]:
        # As torch.nn: hx comes in the caller's batch order and goes to the
        # sorted order before the checks; hy and cy go back.
        data, batch_sizes, sorted_indices, unsorted_indices = input
        h0: Optional[Tensor] = None
        c0: Optional[Tensor] = None
        if hx is None:
            self.check_input(data, batch_sizes)
        else:
            state = self.permute_hidden(hx, sorted_indices)
            self.check_forward_args(data, state, batch_sizes)
            h0 = state[0]
            c0 = state[1]
        output, hy, cy = self._run_packed(data, batch_sizes, h0, c0, weights)
        return (
            PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices),
            self.permute_hidden((hy, cy), unsorted_indices),
        )
