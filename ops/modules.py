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

Options torch.nn lacks (keyword arguments after ``dtype``; their defaults
leave everything exactly as in torch.nn):

* ``hidden_size=[3, 2]``: a size per layer (one entry per layer, so
  ``num_layers=2`` here); LSTM's ``proj_size`` may be a list too (0: no
  projection in that layer). Layer ``l`` outputs ``P_l = proj_size[l] or
  hidden_size[l]`` features per direction and reads the previous layer's.
* ``merge_mode``: how a bidirectional layer combines its two directions
  before the next layer and in the output: ``"concat"`` (torch.nn's, ``2P``
  features), ``"sum"``, ``"mul"`` or ``"ave"`` (``P`` features).
* ``return_sequences=False``: the output is the last step only, ``(batch,
  D*P)`` (``(batch, P)`` when merged): the forward direction's state at each
  sequence's last valid step and the reverse direction's state after reading
  the whole sequence, i.e. the last layer's ``h_n`` merged.

How they run: with equal sizes in every layer and ``"concat"``, the fused
multi-layer operator runs exactly as before (the same parameters, states and
numbers); otherwise the module calls the operator once per layer
(``num_layers=1``, bidirectional as configured, the same ``lengths``),
merging, and in training dropping out, between layers.

Why layers of different sizes get a class of their own: their states cannot
share one tensor, so they are lists (one ``(D, batch, P_l)`` tensor per
layer, LSTM cells ``(D, batch, H_l)``), and TorchScript gives ``forward``
one static type. ``deeprnn.LSTM(...)`` with sizes that differ between layers
therefore builds a :class:`PerLayerLSTM` (chosen in ``__new__``), a subclass
whose ``forward`` takes and returns ``List[Tensor]`` states; it is still an
instance of ``deeprnn.LSTM``, prints as ``LSTM``, and copy, deepcopy, pickle,
``state_dict`` and ``torch.jit.script`` keep it. Every other configuration
keeps the classes and the forward types of torch.nn, so scripted code
written for them is unaffected. (A user subclass of ``deeprnn.LSTM`` cannot
be switched like this; for per-layer sizes it derives from
:class:`PerLayerLSTM`, and its constructor says so.)

The common base is our own ``_RNNBase(torch.nn.Module)`` and deliberately not
``torch.nn.RNNBase``: torch.compile breaks the graph on any instance of
``torch.nn.RNNBase``, and these modules must compile into one graph.
"""

import inspect
import math
import numbers
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn import init
from torch.nn.parameter import Parameter
from torch.nn.utils.rnn import PackedSequence

__all__ = ["RNN", "GRU", "LSTM", "PerLayerRNN", "PerLayerGRU", "PerLayerLSTM"]

_GATE_COUNT = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_PUBLIC_NAME = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
_MERGE_MODES = ("concat", "sum", "mul", "ave")


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


def _pad_packed(data: Tensor, batch_sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(padded (T, B, F) input, lengths, index) of a PackedSequence's data."""
    lengths, index = _packed_layout(batch_sizes, data.device)
    steps = batch_sizes.size(0)
    batch = lengths.size(0)
    # Padding is never read by the operators; zeros keep it harmless.
    padded = data.new_zeros(steps * batch, data.size(1)).index_copy_(0, index, data)
    return padded.view(steps, batch, data.size(1)), lengths, index


def _unpad(output: Tensor, index: Tensor) -> Tensor:
    """The packed rows of a padded (T, B, F) output."""
    return output.reshape(output.size(0) * output.size(1), output.size(2)).index_select(
        0, index
    )


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


def _is_size_list(value) -> bool:
    return isinstance(value, (list, tuple))


def _differs_between_layers(value) -> bool:
    return _is_size_list(value) and any(v != value[0] for v in value[1:])


def _layer_sizes(
    name: str, option: str, values, num_layers: int, minimum: int
) -> List[int]:
    """A per-layer size list, checked: one int >= minimum per layer."""
    if len(values) == 0:
        raise ValueError(
            f"deeprnn.{name}: {option} must be an int or a list with one size per "
            "layer, got an empty list"
        )
    if len(values) != num_layers:
        raise ValueError(
            f"deeprnn.{name}: {option} must have one entry per layer "
            f"(num_layers={num_layers}), got {len(values)}: {list(values)}"
        )
    for layer, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                f"deeprnn.{name}: {option}[{layer}] must be an int, got "
                f"{type(value).__name__} ({value!r})"
            )
        if value < minimum:
            what = (
                "a positive int" if minimum == 1 else "an int >= 0 (0: no projection)"
            )
            raise ValueError(
                f"deeprnn.{name}: {option}[{layer}] must be {what}, got {value}"
            )
    return [int(value) for value in values]


class _RNNBase(torch.nn.Module):
    """What RNN, GRU and LSTM share: arguments, parameters and checks.

    Mirrors the public surface of ``torch.nn.RNNBase``: the attributes below,
    ``_flat_weights_names`` (parameter names in operator order),
    ``_all_weights`` (the names per layer and direction), ``_flat_weights``
    (the parameters in operator order, kept in step with the attributes when
    a parameter is replaced or the module is converted), ``all_weights``,
    ``flatten_parameters()`` (a no-op here) and ``reset_parameters()``.

    Per layer, for the forward code (TorchScript included): ``_hidden_sizes``,
    ``_proj_sizes``, ``_out_sizes`` (proj or hidden), ``_weight_offsets``
    (layer ``l``'s parameters are ``_flat_weights[off[l]:off[l+1]]``) and
    ``_fused`` (one fused operator call runs the whole stack).
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
        "merge_mode",
        "return_sequences",
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
    merge_mode: str
    return_sequences: bool

    # True on the PerLayer* classes, whose states are per-layer lists.
    _per_layer_states = False

    def __new__(cls, *args, **kwargs):
        # deeprnn.RNN/GRU/LSTM(...) with sizes that differ between layers
        # builds the PerLayer* subclass (see the module docstring). Only the
        # public classes themselves switch: their constructor signature is
        # known here. copy, deepcopy and pickle call __new__(cls) with no
        # arguments and keep the class they saved.
        per_layer = cls.__dict__.get("_per_layer_class")
        if per_layer is not None and (args or kwargs):
            try:
                bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
            except TypeError:
                bound = None  # __init__ reports the bad call itself
            if bound is not None and (
                _differs_between_layers(bound.arguments.get("hidden_size"))
                or _differs_between_layers(bound.arguments.get("proj_size"))
            ):
                cls = per_layer
        return super().__new__(cls)

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: Union[int, Sequence[int]],
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: Union[int, Sequence[int]] = 0,
        device=None,
        dtype=None,
        merge_mode: str = "concat",
        return_sequences: bool = True,
    ) -> None:
        super().__init__()
        # The same checks, in the same order and with the same exceptions and
        # messages, as torch.nn.RNNBase, so that code written against
        # torch.nn sees no difference; then those of the per-layer options.
        display = _PUBLIC_NAME.get(mode, mode)
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
        hidden_per_layer = _is_size_list(hidden_size)
        if not hidden_per_layer:
            if not isinstance(hidden_size, int):
                raise TypeError(
                    "hidden_size should be of type int, got: "
                    f"{type(hidden_size).__name__}"
                )
            if hidden_size <= 0:
                raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if hidden_per_layer:
            hidden_sizes = _layer_sizes(
                display, "hidden_size", hidden_size, num_layers, 1
            )
        else:
            # range(), as torch.nn's layer loop: the same error for a bad
            # num_layers (a float, say).
            hidden_sizes = [hidden_size for _ in range(num_layers)]
        if _is_size_list(proj_size):
            proj_sizes = _layer_sizes(display, "proj_size", proj_size, num_layers, 0)
            for layer, (hidden, proj) in enumerate(zip(hidden_sizes, proj_sizes)):
                if proj >= hidden:
                    raise ValueError(
                        f"deeprnn.{display}: proj_size[{layer}] must be smaller than "
                        f"the layer's hidden size {hidden} (or 0: no projection), got "
                        f"{proj}"
                    )
        else:
            if proj_size < 0:
                raise ValueError(
                    "proj_size should be a positive integer or zero to disable "
                    "projections"
                )
            if not hidden_per_layer:
                if proj_size >= hidden_size:
                    raise ValueError("proj_size has to be smaller than hidden_size")
            else:
                for layer, hidden in enumerate(hidden_sizes):
                    if proj_size >= hidden:
                        raise ValueError(
                            f"deeprnn.{display}: proj_size={proj_size} must be smaller "
                            f"than every layer's hidden size, got hidden_size[{layer}]"
                            f"={hidden}"
                        )
            proj_sizes = [proj_size for _ in range(num_layers)]
        if mode not in _GATE_COUNT:
            raise ValueError("Unrecognized RNN mode: " + mode)
        if not isinstance(merge_mode, str):
            raise TypeError(
                f"deeprnn.{display}: merge_mode must be one of 'concat', 'sum', 'mul', "
                f"'ave', got {type(merge_mode).__name__}"
            )
        if merge_mode not in _MERGE_MODES:
            raise ValueError(
                f"deeprnn.{display}: merge_mode must be one of 'concat', 'sum', 'mul', "
                f"'ave', got {merge_mode!r}"
            )
        if merge_mode != "concat" and not bidirectional:
            raise ValueError(
                f"deeprnn.{display}: merge_mode={merge_mode!r} combines the two "
                "directions of a layer and needs bidirectional=True, got bidirectional="
                f"{bidirectional}"
            )
        if not isinstance(return_sequences, bool):
            raise TypeError(
                f"deeprnn.{display}: return_sequences must be a bool, got "
                f"{type(return_sequences).__name__}"
            )
        uniform = all(h == hidden_sizes[0] for h in hidden_sizes) and all(
            p == proj_sizes[0] for p in proj_sizes
        )
        if not uniform and not self._per_layer_states:
            raise TypeError(
                f"deeprnn.{display}: layers of different sizes (hidden_size="
                f"{hidden_size!r}, proj_size={proj_size!r}) have one state tensor per "
                f"layer, which the forward of {type(self).__name__} (a subclass of "
                f"deeprnn.{display}) is not typed for: derive it from "
                f"deeprnn.modules.PerLayer{display} instead (deeprnn.{display}(...) "
                "itself builds one)"
            )

        self.mode = mode
        self.input_size = input_size
        if self._per_layer_states:
            self.hidden_size = list(hidden_sizes)
            self.proj_size = list(proj_sizes) if mode == "LSTM" else 0
        else:
            self.hidden_size = hidden_sizes[0]
            self.proj_size = proj_sizes[0]
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.merge_mode = merge_mode
        self.return_sequences = return_sequences

        factory_kwargs = {"device": device, "dtype": dtype}
        num_directions = 2 if bidirectional else 1
        out_sizes = [p if p > 0 else h for h, p in zip(hidden_sizes, proj_sizes)]
        self._hidden_sizes = hidden_sizes
        self._proj_sizes = proj_sizes
        self._out_sizes = out_sizes
        self._fused = uniform and merge_mode == "concat" and not self._per_layer_states

        flat_names: List[str] = []
        all_names: List[List[str]] = []
        offsets = [0]
        for layer in range(num_layers):
            if layer == 0:
                layer_input_size = input_size
            elif merge_mode == "concat":
                layer_input_size = out_sizes[layer - 1] * num_directions
            else:
                layer_input_size = out_sizes[layer - 1]
            gate_size = _GATE_COUNT[mode] * hidden_sizes[layer]
            for direction in range(num_directions):
                suffix = "_reverse" if direction == 1 else ""
                shapes = [
                    ("weight_ih", (gate_size, layer_input_size)),
                    ("weight_hh", (gate_size, out_sizes[layer])),
                ]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_sizes[layer] > 0:
                    shapes += [("weight_hr", (proj_sizes[layer], hidden_sizes[layer]))]
                names = []
                for prefix, shape in shapes:
                    name = f"{prefix}_l{layer}{suffix}"
                    setattr(self, name, Parameter(torch.empty(shape, **factory_kwargs)))
                    names.append(name)
                flat_names.extend(names)
                all_names.append(names)
            offsets.append(len(flat_names))
        self._weight_offsets = offsets
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
        if isinstance(self.hidden_size, int):
            stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
            for weight in self.parameters():
                init.uniform_(weight, -stdv, stdv)
            return
        # U(-1/sqrt(H_l), 1/sqrt(H_l)) with layer l's own hidden size, drawn
        # in parameter order (as above when the sizes are equal).
        directions = 2 if self.bidirectional else 1
        for index, names in enumerate(self._all_weights):
            stdv = 1.0 / math.sqrt(self._hidden_sizes[index // directions])
            for name in names:
                init.uniform_(getattr(self, name), -stdv, stdv)

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
        if any(p != 0 for p in self._proj_sizes):
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
        if self.merge_mode != "concat":
            s += ", merge_mode={merge_mode!r}"
        if self.return_sequences is not True:
            s += ", return_sequences={return_sequences}"
        return s.format(**self.__dict__)

    def _call_op(
        self,
        input: Tensor,
        hx: Optional[Tensor],
        cx: Optional[Tensor],
        weights: List[Tensor],
        num_layers: int,
        dropout: float,
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
                num_layers,
                dropout,
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
                num_layers,
                dropout,
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
                num_layers,
                dropout,
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
                num_layers,
                dropout,
                self.training,
                self.bidirectional,
                batch_first,
                lengths,
            )
        return output, hy, hy

    def _run(
        self,
        input: Tensor,
        hx: Optional[Tensor],
        cx: Optional[Tensor],
        weights: List[Tensor],
        batch_first: bool,
        lengths: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """The whole stack on batched input, states ``(L*D, B, P)``: (output, hy, cy).

        cy is hy again outside LSTM. With ``return_sequences=False`` the
        output may be left unmerged (the caller reads the last step off hy).
        """
        if self._fused:
            return self._call_op(
                input,
                hx,
                cx,
                weights,
                self.num_layers,
                self.dropout,
                batch_first,
                lengths,
            )
        # Equal sizes but a merge between layers: layer by layer, with the
        # one-tensor states split into (and joined from) per-layer slices.
        directions = 2 if self.bidirectional else 1
        hs: Optional[List[Tensor]] = None
        cs: Optional[List[Tensor]] = None
        if hx is not None:
            hs = hx.split(directions)
        if cx is not None and self.mode == "LSTM":
            cs = cx.split(directions)
        output, hys, cys = self._run_stack(input, hs, cs, weights, batch_first, lengths)
        hy = torch.cat(hys)
        if self.mode == "LSTM":
            return output, hy, torch.cat(cys)
        return output, hy, hy

    def _run_stack(
        self,
        input: Tensor,
        hs: Optional[List[Tensor]],
        cs: Optional[List[Tensor]],
        weights: List[Tensor],
        batch_first: bool,
        lengths: Optional[Tensor],
    ) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
        """One operator call per layer, merging and dropping out in between.

        ``hs``/``cs``: per-layer initial states ``(D, B, P_l)`` / ``(D, B,
        H_l)``. Returns the output and the per-layer final states (cys is hys
        outside LSTM). With ``return_sequences=False`` the last layer's output
        is returned unmerged: only its states are read.
        """
        hys: List[Tensor] = []
        cys: List[Tensor] = []
        output = input
        last = self.num_layers - 1
        for layer in range(self.num_layers):
            h0: Optional[Tensor] = None
            c0: Optional[Tensor] = None
            if hs is not None:
                h0 = hs[layer]
            if cs is not None:
                c0 = cs[layer]
            layer_weights = weights[
                self._weight_offsets[layer] : self._weight_offsets[layer + 1]
            ]
            output, hy, cy = self._call_op(
                output, h0, c0, layer_weights, 1, 0.0, batch_first, lengths
            )
            hys.append(hy)
            cys.append(cy)
            if layer < last or self.return_sequences:
                output = self._merge(output, self._out_sizes[layer])
            if layer < last and self.dropout > 0 and self.training:
                output = torch.nn.functional.dropout(output, self.dropout, True)
        return output, hys, cys

    def _combine(self, forward: Tensor, reverse: Tensor) -> Tensor:
        """merge_mode applied to the two directions' features."""
        if self.merge_mode == "sum":
            return forward + reverse
        if self.merge_mode == "mul":
            return forward * reverse
        if self.merge_mode == "ave":
            return (forward + reverse) / 2
        return torch.cat([forward, reverse], -1)

    def _merge(self, output: Tensor, size: int) -> Tensor:
        """A layer's (..., D*size) output merged as merge_mode says."""
        if not self.bidirectional or self.merge_mode == "concat":
            return output
        return self._combine(output.narrow(-1, 0, size), output.narrow(-1, size, size))

    def _last_layer(self, hy: Tensor) -> Tensor:
        """The last layer's rows (D, B, P) of a (L*D, B, P) state."""
        directions = 2 if self.bidirectional else 1
        return hy.narrow(0, (self.num_layers - 1) * directions, directions)

    def _last_output(self, last_hy: Tensor) -> Tensor:
        """return_sequences=False: the last layer's final states, merged.

        The forward half is the state at each sequence's last valid step, the
        reverse half the state after reading the whole sequence (its output
        at step 0): exactly the last step of a merged output sequence.
        """
        if not self.bidirectional:
            return last_hy[0]
        return self._combine(last_hy[0], last_hy[1])

    def _last_step_output(self, last_hy: Tensor, is_batched: bool) -> Tensor:
        """The return_sequences=False output the caller gets, [un]batched."""
        output = self._last_output(last_hy)
        if not is_batched:
            output = output.squeeze(0)
        return output

    def _check_returns_sequences(self) -> None:
        if not self.return_sequences:
            raise ValueError(
                f"deeprnn.{self._display_name()}: forward_packed returns a "
                "PackedSequence, which needs return_sequences=True; with "
                "return_sequences=False pass the padded input and lengths= to "
                "forward (in eager mode forward also takes the PackedSequence)"
            )

    def _run_packed(
        self,
        data: Tensor,
        batch_sizes: Tensor,
        hx: Optional[Tensor],
        cx: Optional[Tensor],
        weights: List[Tensor],
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Runs a PackedSequence's data; all in its sorted batch order.

        Returns the packed output data (not unpadded when
        ``return_sequences=False``: nobody reads it), hy and cy (hy again
        outside LSTM).
        """
        padded, lengths, index = _pad_packed(data, batch_sizes)
        output, hy, cy = self._run(padded, hx, cx, weights, False, lengths)
        if self.return_sequences:
            output = _unpad(output, index)
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
        if not self.return_sequences:
            output = self._last_step_output(self._last_layer(hy), is_batched)
        elif not is_batched:
            output = output.squeeze(batch_dim)
        if not is_batched:
            hy = hy.squeeze(1)
        return output, hy

    def _single_state_packed(
        self, input: PackedSequence, hx: Optional[Tensor], weights: List[Tensor]
    ) -> Tuple[Tensor, Tensor]:
        """(packed output data, hy in the caller's batch order)."""
        # As torch.nn: hx comes in the caller's batch order and goes to the
        # sorted order before the checks; hy goes back.
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if hx is None:
            self.check_input(data, batch_sizes)
        else:
            hx = self.permute_hidden(hx, sorted_indices)
            self.check_forward_args(data, hx, batch_sizes)
        output, hy, _ = self._run_packed(data, batch_sizes, hx, None, weights)
        return output, self.permute_hidden(hy, unsorted_indices)

    @torch.jit.unused
    def _single_state_packed_eager(self, input, hx, weights):
        # Eager forward(PackedSequence): a PackedSequence out, or with
        # return_sequences=False the last step as a tensor (caller's order).
        data, hy = self._single_state_packed(input, hx, weights)
        if self.return_sequences:
            return (
                PackedSequence(data, input.batch_sizes, input.sorted_indices,
                               input.unsorted_indices),
                hy,
            )
        return self._last_output(self._last_layer(hy)), hy

    # ------------------------------------------------- per-layer list states

    def _layer_states(
        self,
        states: List[Tensor],
        name: str,
        sizes: List[int],
        batch: int,
        is_batched: bool,
    ) -> List[Tensor]:
        """Per-layer initial states checked (count, shapes) and made batched."""
        if len(states) != self.num_layers:
            raise RuntimeError(
                f"deeprnn.{self._display_name()}: {name} must be a list of "
                f"{self.num_layers} tensors, one per layer, got {len(states)}"
            )
        directions = 2 if self.bidirectional else 1
        checked: List[Tensor] = []
        for layer in range(self.num_layers):
            state = states[layer]
            if is_batched:
                expected = [directions, batch, sizes[layer]]
                what = "(directions, batch, features)"
            else:
                expected = [directions, sizes[layer]]
                what = "(directions, features)"
            got = list(state.size())
            if got != expected:
                raise RuntimeError(
                    f"deeprnn.{self._display_name()}: {name}[{layer}] (layer {layer}) "
                    f"must have size {expected} {what}, got {got}"
                )
            checked.append(state if is_batched else state.unsqueeze(1))
        return checked

    @torch.jit.unused
    def _check_state_list_type(self, states: List[Tensor], name: str) -> None:
        # Eager mode: a tensor (or anything else) where a list belongs would
        # otherwise fail far from its cause. TorchScript checks the type.
        if not isinstance(states, (list, tuple)) or not all(
            isinstance(state, Tensor) for state in states
        ):
            raise TypeError(
                f"deeprnn.{self._display_name()}: {name} must be a list of "
                f"{self.num_layers} tensors, one per layer (this module's layers "
                f"differ in size), got {type(states).__name__}"
            )

    def _permute_states(
        self, states: List[Tensor], permutation: Optional[Tensor]
    ) -> List[Tensor]:
        if permutation is None:
            return states
        return [state.index_select(1, permutation) for state in states]

    def _per_layer_forward(
        self,
        input: Tensor,
        hs: Optional[List[Tensor]],
        cs: Optional[List[Tensor]],
        weights: List[Tensor],
        lengths: Optional[Tensor],
        h_name: str,
    ) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
        """The PerLayer* forward on a tensor: (output, hys, cys)."""
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
        self.check_input(input, None)
        batch = input.size(batch_dim)
        if hs is not None:
            hs = self._layer_states(hs, h_name, self._out_sizes, batch, is_batched)
        if cs is not None:
            cs = self._layer_states(cs, "c_0", self._hidden_sizes, batch, is_batched)
        output, hys, cys = self._run_stack(
            input, hs, cs, weights, self.batch_first, lengths
        )
        if not self.return_sequences:
            output = self._last_step_output(hys[-1], is_batched)
        elif not is_batched:
            output = output.squeeze(batch_dim)
        if not is_batched:
            hys = [state.squeeze(1) for state in hys]
            cys = [state.squeeze(1) for state in cys]
        return output, hys, cys

    def _per_layer_packed(
        self,
        input: PackedSequence,
        hs: Optional[List[Tensor]],
        cs: Optional[List[Tensor]],
        weights: List[Tensor],
        h_name: str,
    ) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
        """The PerLayer* forward on a PackedSequence: (packed output data,
        hys, cys), the states in the caller's batch order as in torch.nn."""
        data, batch_sizes, sorted_indices, unsorted_indices = input
        self.check_input(data, batch_sizes)
        batch = int(batch_sizes[0])
        if hs is not None:
            hs = self._permute_states(
                self._layer_states(hs, h_name, self._out_sizes, batch, True),
                sorted_indices,
            )
        if cs is not None:
            cs = self._permute_states(
                self._layer_states(cs, "c_0", self._hidden_sizes, batch, True),
                sorted_indices,
            )
        padded, lengths, index = _pad_packed(data, batch_sizes)
        output, hys, cys = self._run_stack(padded, hs, cs, weights, False, lengths)
        if self.return_sequences:
            output = _unpad(output, index)
        hys = self._permute_states(hys, unsorted_indices)
        if self.mode == "LSTM":
            cys = self._permute_states(cys, unsorted_indices)
        else:
            cys = hys
        return output, hys, cys

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


_OPTIONS_DOC = r"""
    Options torch.nn lacks (keyword arguments; the defaults change nothing):

    * ``hidden_size`` may be a list, one size per layer (``len ==
      num_layers``, each ``>= 1``): ``deeprnn.GRU(3, [3, 2], num_layers=2)``
      is the 2-layer stack with 3 then 2 units. Layer ``l`` reads the
      previous layer's output; parameters keep torch.nn's names with
      per-layer shapes and are initialised ``U(-1/sqrt(H_l), 1/sqrt(H_l))``.
      When the sizes differ, the constructor returns a ``PerLayer*``
      subclass and the states are lists (below). A list of equal sizes is
      exactly the int (``hidden_size`` then holds the int).
    * ``merge_mode``: ``"concat"`` (default, torch.nn's), ``"sum"``,
      ``"mul"`` or ``"ave"``: how a bidirectional layer combines its forward
      and reverse features, before the next layer and in the output, which
      then has ``P`` features instead of ``2P``; needs
      ``bidirectional=True``. ``deeprnn.GRU(3, 4, bidirectional=True,
      merge_mode="sum")(x)[0]`` is ``(T, N, 4)``.
    * ``return_sequences``: ``True`` (default) returns every step; ``False``
      only the last step, ``(N, D*P)`` (``(N, P)`` merged, ``(D*P)``
      unbatched, whatever ``batch_first``): the forward direction's state at
      each sequence's last valid step and the reverse direction's state after
      reading the whole sequence, i.e. the last layer's ``h_n`` merged. With
      ``lengths`` or a ``PackedSequence``, each sequence's own last step, in
      the caller's batch order, as a plain tensor (``forward_packed``, typed
      to return a ``PackedSequence``, refuses ``return_sequences=False``).

    States when the layers differ in size: ``h_n`` (and ``c_n``) is a list
    of ``num_layers`` tensors, layer ``l``'s ``(D, N, P_l)`` (cells
    ``(D, N, H_l)``; ``(D, P_l)`` unbatched), and ``hx`` takes the same
    form. With equal sizes they stay one ``(D*num_layers, N, P)`` tensor,
    whatever ``merge_mode``.
"""


class RNN(_RNNBase):
    r"""Multi-layer Elman RNN with tanh or ReLU; a drop-in for torch.nn.RNN.

    ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or ReLU).

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of the hidden state ``h``; or a list, one per
            layer (see below).
        num_layers: number of stacked layers. Default: 1.
        nonlinearity: ``'tanh'`` or ``'relu'``. Default: ``'tanh'``.
        bias: use ``b_ih`` and ``b_hh``. Default: True.
        batch_first: input and output are ``(batch, seq, feature)``.
        dropout: dropout probability on the outputs of every layer but the
            last, in training. Default: 0.
        bidirectional: add a reverse direction. Default: False.
        device, dtype: where and in which dtype to create the parameters.
        merge_mode: ``'concat'``, ``'sum'``, ``'mul'`` or ``'ave'``.
            Default: ``'concat'``.
        return_sequences: all steps (True) or only the last. Default: True.

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
        hidden_size: Union[int, Sequence[int]],
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        merge_mode: str = "concat",
        return_sequences: bool = True,
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
            merge_mode,
            return_sequences,
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
            return self._single_state_packed_eager(input, hx, weights)
        return self._single_state_forward(input, hx, weights, lengths)

    @torch.jit.export
    def forward_packed(
        self, input: PackedSequence, hx: Optional[Tensor] = None
    ) -> Tuple[PackedSequence, Tensor]:
        """``forward`` for a ``PackedSequence``, callable from TorchScript.

        Needs ``return_sequences=True`` (its output is a ``PackedSequence``).
        """
        self._check_returns_sequences()
        data, hy = self._single_state_packed(input, hx, self._forward_weights())
        return (
            PackedSequence(data, input.batch_sizes, input.sorted_indices,
                           input.unsorted_indices),
            hy,
        )


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
        hidden_size: Union[int, Sequence[int]],
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        merge_mode: str = "concat",
        return_sequences: bool = True,
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
            merge_mode,
            return_sequences,
        )

    # The same forward as RNN's (the mode picks the operator); shared
    # rather than written twice, as PerLayerGRU shares PerLayerRNN's.
    forward = RNN.forward
    forward_packed = RNN.forward_packed


class LSTM(_RNNBase):
    r"""Multi-layer LSTM, optionally with projections; a drop-in for torch.nn.LSTM.

    Gates ``i, f, g, o`` as in torch.nn.LSTM; with ``proj_size > 0`` the
    hidden state is projected, ``h_t = W_hr (o_t * tanh(c_t))``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout,
        bidirectional, device, dtype, merge_mode, return_sequences: as
        :class:`RNN`.
        proj_size: if ``> 0``, an LSTM with projections of this size
            (smaller than ``hidden_size``). Default: 0. Or a list, one per
            layer, each ``0 <= proj_size[l] < hidden_size[l]`` (0: no
            projection in that layer): ``deeprnn.LSTM(3, [8, 6],
            num_layers=2, proj_size=[4, 0])``.

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
        hidden_size: Union[int, Sequence[int]],
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: Union[int, Sequence[int]] = 0,
        device=None,
        dtype=None,
        merge_mode: str = "concat",
        return_sequences: bool = True,
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
            merge_mode,
            return_sequences,
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
            return self._packed_eager(input, hx, weights)

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
        if not self.return_sequences:
            output = self._last_step_output(self._last_layer(hy), is_batched)
        elif not is_batched:
            output = output.squeeze(batch_dim)
        if not is_batched:
            hy = hy.squeeze(1)
            cy = cy.squeeze(1)
        return output, (hy, cy)

    @torch.jit.export
    def forward_packed(
        self, input: PackedSequence, hx: Optional[Tuple[Tensor, Tensor]] = None
    ) -> Tuple[PackedSequence, Tuple[Tensor, Tensor]]:
        """``forward`` for a ``PackedSequence``, callable from TorchScript.

        Needs ``return_sequences=True`` (its output is a ``PackedSequence``).
        """
        self._check_returns_sequences()
        data, state = self._packed(input, hx, self._forward_weights())
        return (
            PackedSequence(data, input.batch_sizes, input.sorted_indices,
                           input.unsorted_indices),
            state,
        )

    @torch.jit.unused
    def _packed_eager(self, input, hx, weights):
        # Eager forward(PackedSequence): a PackedSequence out, or with
        # return_sequences=False the last step as a tensor (caller's order).
        data, (hy, cy) = self._packed(input, hx, weights)
        if self.return_sequences:
            output = PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                    input.unsorted_indices)
        else:
            output = self._last_output(self._last_layer(hy))
        return output, (hy, cy)

    def _packed(
        self,
        input: PackedSequence,
        hx: Optional[Tuple[Tensor, Tensor]],
        weights: List[Tensor],
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """(packed output data, (hy, cy) in the caller's batch order)."""
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
        return output, self.permute_hidden((hy, cy), unsorted_indices)


# ------------------------------------------------------ layers of different sizes

_PER_LAYER_CONSTANTS = [
    name for name in _RNNBase.__constants__ if name not in ("hidden_size", "proj_size")
]


class PerLayerRNN(RNN):
    r"""A :class:`RNN` whose layers differ in size: per-layer list states.

    ``deeprnn.RNN(...)`` builds one when ``hidden_size`` is a list of
    different sizes; everything is as in :class:`RNN` except the states:
    ``hx`` and ``h_n`` are lists of ``num_layers`` tensors, layer ``l``'s
    ``(D, N, hidden_size[l])`` (``(D, hidden_size[l])`` unbatched), and
    ``hidden_size`` is the list. In TorchScript ``forward`` is typed
    ``(Tensor, Optional[List[Tensor]], Optional[Tensor]) -> Tuple[Tensor,
    List[Tensor]]``.
    """

    __constants__ = _PER_LAYER_CONSTANTS
    hidden_size: List[int]
    proj_size: int
    nonlinearity: str
    _per_layer_states = True

    def forward(  # type: ignore[override]
        self,
        input: Tensor,
        hx: Optional[List[Tensor]] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, List[Tensor]]:
        """``(output, h_n)``, ``h_n`` a list with one tensor per layer."""
        weights = self._forward_weights()
        if not torch.jit.is_scripting():
            if hx is not None:
                self._check_state_list_type(hx, "hx")
        if isinstance(input, PackedSequence):
            self._refuse_lengths_with_packed(lengths)
            data, hys, _ = self._per_layer_packed(input, hx, None, weights, "hx")
            if self.return_sequences:
                return (
                    PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                   input.unsorted_indices),
                    hys,
                )
            return self._last_output(hys[-1]), hys
        output, hys, _ = self._per_layer_forward(
            input, hx, None, weights, lengths, "hx"
        )
        return output, hys

    @torch.jit.export
    def forward_packed(  # type: ignore[override]
        self, input: PackedSequence, hx: Optional[List[Tensor]] = None
    ) -> Tuple[PackedSequence, List[Tensor]]:
        """``forward`` for a ``PackedSequence``, callable from TorchScript.

        Needs ``return_sequences=True`` (its output is a ``PackedSequence``).
        """
        self._check_returns_sequences()
        data, hys, _ = self._per_layer_packed(
            input, hx, None, self._forward_weights(), "hx"
        )
        return (
            PackedSequence(data, input.batch_sizes, input.sorted_indices,
                           input.unsorted_indices),
            hys,
        )

    def _get_name(self) -> str:
        return "RNN"


class PerLayerGRU(GRU):
    r"""A :class:`GRU` whose layers differ in size: per-layer list states.

    ``deeprnn.GRU(...)`` builds one when ``hidden_size`` is a list of
    different sizes; the states are as in :class:`PerLayerRNN`.
    """

    __constants__ = _PER_LAYER_CONSTANTS
    hidden_size: List[int]
    proj_size: int
    _per_layer_states = True

    forward = PerLayerRNN.forward
    forward_packed = PerLayerRNN.forward_packed

    def _get_name(self) -> str:
        return "GRU"


class PerLayerLSTM(LSTM):
    r"""A :class:`LSTM` whose layers differ in size: per-layer list states.

    ``deeprnn.LSTM(...)`` builds one when ``hidden_size`` or ``proj_size``
    is a list of different sizes; everything is as in :class:`LSTM` except
    the states: ``hx`` is ``(h_0, c_0)`` and the output's ``(h_n, c_n)``,
    each a list of ``num_layers`` tensors, layer ``l``'s ``h`` ``(D, N,
    P_l)`` with ``P_l = proj_size[l] or hidden_size[l]`` and ``c`` ``(D, N,
    hidden_size[l])`` (no ``N`` unbatched); ``hidden_size`` and
    ``proj_size`` are lists. In TorchScript ``forward`` is typed
    ``(Tensor, Optional[Tuple[List[Tensor], List[Tensor]]], Optional[Tensor])
    -> Tuple[Tensor, Tuple[List[Tensor], List[Tensor]]]``.
    """

    __constants__ = _PER_LAYER_CONSTANTS
    hidden_size: List[int]
    proj_size: List[int]
    _per_layer_states = True

    def forward(  # type: ignore[override]
        self,
        input: Tensor,
        hx: Optional[Tuple[List[Tensor], List[Tensor]]] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tuple[List[Tensor], List[Tensor]]]:
        """``(output, (h_n, c_n))``, each state a list with one tensor per layer."""
        weights = self._forward_weights()
        hs: Optional[List[Tensor]] = None
        cs: Optional[List[Tensor]] = None
        if hx is not None:
            if not torch.jit.is_scripting():
                self._check_state_pair_type(hx)
            hs = hx[0]
            cs = hx[1]
        if isinstance(input, PackedSequence):
            self._refuse_lengths_with_packed(lengths)
            data, hys, cys = self._per_layer_packed(input, hs, cs, weights, "h_0")
            if self.return_sequences:
                return (
                    PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                   input.unsorted_indices),
                    (hys, cys),
                )
            return self._last_output(hys[-1]), (hys, cys)
        output, hys, cys = self._per_layer_forward(
            input, hs, cs, weights, lengths, "h_0"
        )
        return output, (hys, cys)

    @torch.jit.export
    def forward_packed(  # type: ignore[override]
        self,
        input: PackedSequence,
        hx: Optional[Tuple[List[Tensor], List[Tensor]]] = None,
    ) -> Tuple[PackedSequence, Tuple[List[Tensor], List[Tensor]]]:
        """``forward`` for a ``PackedSequence``, callable from TorchScript.

        Needs ``return_sequences=True`` (its output is a ``PackedSequence``).
        """
        self._check_returns_sequences()
        hs: Optional[List[Tensor]] = None
        cs: Optional[List[Tensor]] = None
        if hx is not None:
            hs = hx[0]
            cs = hx[1]
        data, hys, cys = self._per_layer_packed(
            input, hs, cs, self._forward_weights(), "h_0"
        )
        return (
            PackedSequence(data, input.batch_sizes, input.sorted_indices,
                           input.unsorted_indices),
            (hys, cys),
        )

    @torch.jit.unused
    def _check_state_pair_type(self, hx: Tuple[List[Tensor], List[Tensor]]) -> None:
        if not isinstance(hx, (list, tuple)) or len(hx) != 2:
            raise TypeError(
                "deeprnn.LSTM: hx must be a pair (h_0, c_0) of lists of "
                f"{self.num_layers} tensors, one per layer (this module's layers "
                f"differ in size), got {type(hx).__name__}"
                + (f" of length {len(hx)}" if isinstance(hx, (list, tuple)) else "")
            )
        self._check_state_list_type(hx[0], "h_0")
        self._check_state_list_type(hx[1], "c_0")

    def _get_name(self) -> str:
        return "LSTM"


# The shared part of the three docstrings (a class docstring is a literal;
# python -OO drops them).
for _cls in (RNN, GRU, LSTM):
    if _cls.__doc__:
        _cls.__doc__ += _OPTIONS_DOC
del _cls

RNN._per_layer_class = PerLayerRNN
GRU._per_layer_class = PerLayerGRU
LSTM._per_layer_class = PerLayerLSTM
