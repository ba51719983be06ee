#!/usr/bin/env python3
"""Benchmark deeprnn against torch.nn, same weights, same process.

For each benchmark row (a shape) and each mode (LSTM, GRU, RNN_TANH) the
script builds one ``torch.nn`` module ``ref`` and runs

* torch.nn:  ``ref(x)``
* deeprnn:   ``torch.ops.deeprnn.<mode>(x, None, [None,] list(ref._flat_weights),
  True, num_layers, 0.0, train, bidirectional, False)``

on the SAME parameter tensors, in two passes:

* inference: the forward under ``torch.no_grad()``;
* training:  forward + backward of a random-weighted sum of the output,
  with respect to the input and every weight (``torch.autograd.grad``).

Before timing, the outputs (and, for training, the gradients) of the two
sides are compared once per row and mode; the script aborts if they differ.
Then, after warm-up runs, the two sides are alternated (torch, deeprnn,
torch, deeprnn, ...) for ``--repeats`` timed runs each, every run on a fresh
``torch.randn`` input made outside the timed region. Reported: medians in
milliseconds and the ratio torch_median / deeprnn_median (above 1 means
deeprnn is faster).

With ``--lengths spread`` every batch is variable-length: each input gets
fresh lengths drawn uniformly from ``[T/4, T]`` in random order. deeprnn
takes the padded batch and the lengths (``lengths=``); torch.nn takes the
same padded batch through its packed path, ``pack_padded_sequence(x,
lengths, enforce_sorted=False)`` -> module -> ``pad_packed_sequence``, and
both return the padded output, so the two sides do the same job from the
same data. The loss weights only the valid steps (the rest are zero on both
sides).

"Saved MiB" is the memory that one training forward keeps for backward,
measured with ``torch.autograd.graph.saved_tensors_hooks``: the bytes of the
distinct storages saved for backward, not counting the storages of the
parameters and of the input (they exist anyway).

On a GPU (``--device cuda``) the times are CUDA events around each run on
the current stream, the grid adds the GPU-only row ``large``, and TF32 is
set the same on both sides (``--tf32``, default off: IEEE float32) and
printed; ``--dtype float32,bfloat16`` runs each row in both dtypes (a dtype
column then joins the table). ``scripts/gpu_check.sh`` runs that grid.

Examples::

    .venv/bin/python scripts/bench.py                       # full grid
    .venv/bin/python scripts/bench.py --device cuda --dtype float32,bfloat16
    .venv/bin/python scripts/bench.py --quick --rows small-batch,long --modes gru
    .venv/bin/python scripts/bench.py --threads 1 --dtype float64
    .venv/bin/python scripts/bench.py --lengths spread   # variable lengths

The operators come from ``--lib`` (default: ``$DEEPRNN_LIBRARY``, else
``build/libdeeprnn.so``), or from the installed ``deeprnn`` package when no
library file is found.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Row:
    name: str
    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool = False
    gpu_only: bool = False  # too large for a CPU run of the grid

    def describe(self) -> str:
        return (
            f"T={self.seq_len} B={self.batch} I={self.input_size} "
            f"H={self.hidden_size} L={self.num_layers}"
            + (" bidirectional" if self.bidirectional else "")
            + (", GPU only" if self.gpu_only else "")
        )


ROWS = {
    row.name: row
    for row in [
        Row("fastrnns", 100, 64, 512, 512, 1),
        Row("stacked-bi", 100, 32, 256, 256, 2, bidirectional=True),
        Row("deep", 100, 32, 256, 256, 4),
        Row("small-batch", 200, 1, 256, 256, 2),
        Row("long", 1000, 16, 128, 128, 1),
        # One step per call, as in autoregressive decoding: what a call costs
        # besides its arithmetic (weight preparation, dispatch) dominates.
        Row("decode", 1, 1, 512, 512, 2),
        Row("large", 256, 128, 1024, 1024, 2, bidirectional=True,
            gpu_only=True),
    ]
}

MODES = {
    # mode: (torch.nn module factory keyword, op name, has cell state)
    "lstm": ("LSTM", "lstm", True),
    "gru": ("GRU", "gru", False),
    "rnn_tanh": ("RNN", "rnn_tanh", False),
}

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
}

# Output tolerance (max abs diff) and gradient tolerance (max abs diff
# relative to the largest reference gradient) per dtype.
OUTPUT_ATOL = {torch.float32: 1e-4, torch.float64: 1e-9, torch.bfloat16: 6e-2}
GRAD_RTOL = {torch.float32: 1e-3, torch.float64: 1e-8, torch.bfloat16: 2.5e-1}

MIB = 1024.0 * 1024.0


# --------------------------------------------------------------------------
# Setup


def log(message: str) -> None:
    if _progress is not None:
        _progress.write(message)
    else:
        print(message, flush=True)


_progress = None


def fail(message: str) -> None:
    if _progress is not None:
        _progress.close()
    print("\n" + "!" * 78, file=sys.stderr)
    print(f"bench.py: ERROR: {message}", file=sys.stderr)
    print("!" * 78, file=sys.stderr)
    sys.exit(1)


def ops_registered() -> bool:
    try:
        torch.ops.deeprnn.lstm
    except (AttributeError, RuntimeError):
        return False
    return True


def load_deeprnn(lib_arg):
    """Registers torch.ops.deeprnn and says where it came from."""
    if ops_registered():
        return "already registered"
    candidates = []
    if lib_arg:
        candidates.append(lib_arg)
    else:
        if os.environ.get("DEEPRNN_LIBRARY"):
            candidates.append(os.environ["DEEPRNN_LIBRARY"])
        candidates.append(os.path.join(ROOT, "build", "libdeeprnn.so"))
    for path in candidates:
        path = os.path.abspath(os.path.expanduser(path))
        if os.path.isfile(path):
            torch.ops.load_library(path)
            return path
    if lib_arg:
        fail(f"--lib {lib_arg}: no such file")
    try:
        import deeprnn  # noqa: F401
    except Exception as error:  # the package may be missing or broken
        fail(
            "cannot find the deeprnn operators: no library at "
            + ", ".join(candidates)
            + f" and `import deeprnn` failed ({error}). Build it first "
            "(cmake --build build) or pass --lib PATH."
        )
    return "import deeprnn (" + os.path.dirname(deeprnn.__file__) + ")"


AMX_PROBE = (
    "import torch\n"
    "a = torch.randn(64, 256, dtype=torch.bfloat16)\n"
    "b = torch.randn(256, 256, dtype=torch.bfloat16)\n"
    "(a @ b).sum().item()\n"
)


def guard_against_unusable_amx() -> str:
    """Some virtual machines advertise AMX in /proc/cpuinfo without enabling
    it, and oneDNN's bfloat16 GEMM (used by torch.nn and by deeprnn alike)
    then dies with SIGILL. If a bfloat16 matmul crashes in a child process,
    cap oneDNN below AMX (ONEDNN_MAX_CPU_ISA is read on first use, so this
    works as long as nothing here has called oneDNN yet). Returns a note."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get(
            "DNNL_MAX_CPU_ISA"):
        return "ONEDNN_MAX_CPU_ISA set by the caller"
    try:
        with open("/proc/cpuinfo") as f:
            if "amx_bf16" not in f.read():
                return ""
    except OSError:
        return ""
    probe = subprocess.run([sys.executable, "-c", AMX_PROBE],
                           capture_output=True, timeout=300)
    if probe.returncode == 0:
        return ""
    os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_BF16"
    return ("AMX is advertised but a bfloat16 matmul crashed (exit "
            f"{probe.returncode}); set ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 "
            "for both sides")


def machine_description() -> dict:
    model = None
    try:
        lscpu = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10
        ).stdout
        for line in lscpu.splitlines():
            if line.strip().startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    if not model:
        model = platform.processor() or platform.machine() or "unknown"
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": load,
    }


# --------------------------------------------------------------------------
# The two sides


def make_reference(row: Row, mode: str, dtype, device):
    module_name = MODES[mode][0]
    kwargs = {}
    if module_name == "RNN":
        kwargs["nonlinearity"] = "tanh"
    ref = getattr(torch.nn, module_name)(
        row.input_size,
        row.hidden_size,
        num_layers=row.num_layers,
        bidirectional=row.bidirectional,
        **kwargs,
    )
    return ref.to(device=device, dtype=dtype)


def deeprnn_forward(mode: str, row: Row, batch, params, train: bool):
    """Returns (output, hy[, cy]) from torch.ops.deeprnn.<mode>."""
    op = getattr(torch.ops.deeprnn, MODES[mode][1])
    if MODES[mode][2]:
        return op(batch.x, None, None, params, True, row.num_layers, 0.0,
                  train, row.bidirectional, False, batch.lengths)
    return op(batch.x, None, params, True, row.num_layers, 0.0, train,
              row.bidirectional, False, batch.lengths)


def torch_forward(ref, batch):
    if batch.lengths is None:
        output, state = ref(batch.x)
    else:
        packed = pack_padded_sequence(batch.x, batch.lengths,
                                      enforce_sorted=False)
        output, state = ref(packed)
        output, _ = pad_packed_sequence(output,
                                        total_length=batch.x.size(0))
    if isinstance(state, tuple):
        return (output,) + state
    return (output, state)


@dataclass
class Batch:
    x: torch.Tensor  # (T, B, I), padded when lengths is given
    lengths: object  # None, or int64 (B) on the CPU


def new_input(row: Row, dtype, device, requires_grad=False,
              lengths_mode="none"):
    x = torch.randn(
        row.seq_len, row.batch, row.input_size, dtype=dtype, device=device,
        requires_grad=requires_grad,
    )
    lengths = None
    if lengths_mode == "spread":
        low = max(1, row.seq_len // 4)
        lengths = torch.randint(low, row.seq_len + 1, (row.batch,))
    return Batch(x, lengths)


class Side:
    """One side of the comparison: a forward function over the shared
    parameters, an inference step and a training step."""

    def __init__(self, name, forward, params, output_weight):
        self.name = name
        self.forward = forward  # (batch, train) -> tuple of outputs
        self.params = params
        self.output_weight = output_weight

    def inference(self, batch):
        with torch.no_grad():
            return self.forward(batch, False)

    def loss(self, batch):
        outputs = self.forward(batch, True)
        return (outputs[0] * self.output_weight).sum(), outputs

    def training(self, batch):
        loss, outputs = self.loss(batch)
        grads = torch.autograd.grad(loss, [batch.x] + self.params)
        return outputs, grads


def saved_bytes(side: Side, batch) -> dict:
    """Bytes saved for backward by one training forward of `side`."""
    excluded = {p.untyped_storage().data_ptr() for p in side.params}
    excluded.add(batch.x.untyped_storage().data_ptr())
    storages = {}
    count = [0]

    def pack(tensor):
        count[0] += 1
        try:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass  # e.g. a tensor without storage
        return tensor

    def unpack(tensor):
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        loss, _ = side.loss(batch)
    torch.autograd.grad(loss, [batch.x] + side.params)
    del loss
    total = sum(n for ptr, n in storages.items() if ptr not in excluded)
    return {
        "saved_bytes": total,
        "saved_bytes_including_params_and_input": sum(storages.values()),
        "saved_tensors": count[0],
        "saved_storages": len(storages),
    }


# --------------------------------------------------------------------------
# Checks and timing


def max_abs_diff(a, b) -> float:
    if a.shape != b.shape:
        fail(f"shape mismatch: torch.nn {tuple(a.shape)} vs deeprnn "
             f"{tuple(b.shape)}")
    if a.numel() == 0:
        return 0.0
    return (a.double() - b.double()).abs().max().item()


def check_agreement(row, mode, torch_side, deeprnn_side, param_names, dtype,
                    device, atol, lengths_mode):
    """Compares outputs (inference) and gradients (training) once."""
    names = ["output", "hy", "cy"]
    x = new_input(row, dtype, device, lengths_mode=lengths_mode)
    ref_outputs = torch_side.inference(x)
    our_outputs = deeprnn_side.inference(x)
    output_diff = 0.0
    for name, a, b in zip(names, ref_outputs, our_outputs):
        diff = max_abs_diff(a, b)
        output_diff = max(output_diff, diff)
        if not diff < atol:
            fail(f"{row.name}/{mode}: deeprnn and torch.nn disagree on "
                 f"{name} (inference): max abs diff {diff:.3e} >= {atol:.1e}")

    x = new_input(row, dtype, device, requires_grad=True,
                  lengths_mode=lengths_mode)
    ref_outputs, ref_grads = torch_side.training(x)
    our_outputs, our_grads = deeprnn_side.training(x)
    for name, a, b in zip(names, ref_outputs, our_outputs):
        diff = max_abs_diff(a, b)
        output_diff = max(output_diff, diff)
        if not diff < atol:
            fail(f"{row.name}/{mode}: deeprnn and torch.nn disagree on "
                 f"{name} (training forward): max abs diff {diff:.3e} >= "
                 f"{atol:.1e}")
    grad_names = ["input"] + list(param_names)
    rtol = GRAD_RTOL[dtype]
    grad_diff = 0.0
    for name, a, b in zip(grad_names, ref_grads, our_grads):
        scale = max(a.double().abs().max().item(), 1e-12)
        diff = max_abs_diff(a, b) / scale
        grad_diff = max(grad_diff, diff)
        if not diff < rtol:
            message = (f"{row.name}/{mode}: deeprnn and torch.nn disagree on "
                       f"the gradient of {name}: max abs diff / max abs "
                       f"{diff:.3e} >= {rtol:.1e}")
            if dtype == torch.bfloat16:
                log("WARNING (bfloat16, not aborting): " + message)
            else:
                fail(message)
    return {"max_abs_diff_output": output_diff,
            "max_rel_diff_grad": grad_diff}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pass(pass_name, torch_side, deeprnn_side, row, dtype, device,
              warmup, repeats, lengths_mode):
    """Alternates the two sides; returns the raw times in ms for each."""
    training = pass_name == "training"
    sides = [torch_side, deeprnn_side]

    def run(side):
        x = new_input(row, dtype, device, requires_grad=training,
                      lengths_mode=lengths_mode)
        synchronize(device)
        if device.type == "cuda":
            # CUDA events on the current stream: the GPU's own time between
            # the two marks, without the host's launch jitter at the ends.
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            result = side.training(x) if training else side.inference(x)
            end.record()
            end.synchronize()
            del result
            return start.elapsed_time(end)
        start = time.perf_counter()
        if training:
            result = side.training(x)
        else:
            result = side.inference(x)
        elapsed = time.perf_counter() - start
        del result
        return elapsed * 1000.0

    for _ in range(warmup):
        for side in sides:
            run(side)
    times = {side.name: [] for side in sides}
    for _ in range(repeats):
        for side in sides:
            times[side.name].append(run(side))
    return times


# --------------------------------------------------------------------------
# Reporting


def markdown_table(results) -> str:
    """The table; with more than one dtype in `results`, a dtype column."""
    with_dtype = len({r["dtype"] for r in results}) > 1
    lines = [
        "| row | " + ("dtype | " if with_dtype else "")
        + "mode | pass | torch.nn ms | deeprnn ms | ratio "
        "| saved MiB torch | saved MiB deeprnn |",
        "|---|" + ("---|" if with_dtype else "")
        + "---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        saved_torch = saved_deeprnn = "-"
        if r["pass"] == "training":
            saved_torch = f"{r['saved']['torch.nn']['saved_bytes'] / MIB:.1f}"
            saved_deeprnn = f"{r['saved']['deeprnn']['saved_bytes'] / MIB:.1f}"
        dtype_cell = f"{r['dtype']} | " if with_dtype else ""
        lines.append(
            f"| {r['row']} | {dtype_cell}{r['mode']} | {r['pass']} "
            f"| {r['median_ms']['torch.nn']:.2f} "
            f"| {r['median_ms']['deeprnn']:.2f} "
            f"| {r['ratio']:.2f} | {saved_torch} | {saved_deeprnn} |"
        )
    return "\n".join(lines)


def write_png(path, results, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"note: matplotlib is not installed; skipping the chart {path}")
        return False
    labels = []
    for r in results:
        label = f"{r['row']}\n{r['mode']}"
        if label not in labels:
            labels.append(label)
    passes = ["inference", "training"]
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.5))
    for k, pass_name in enumerate(passes):
        xs, ys = [], []
        for r in results:
            if r["pass"] != pass_name:
                continue
            i = labels.index(f"{r['row']}\n{r['mode']}")
            xs.append(i + (k - 0.5) * width)
            ys.append(r["ratio"])
        bars = ax.bar(xs, ys, width, label=pass_name)
        for bar, y in zip(bars, ys):
            ax.annotate(f"{y:.2f}", (bar.get_x() + bar.get_width() / 2, y),
                        ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("torch.nn time / deeprnn time  (>1: deeprnn faster)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------


def default_rows(device_type: str):
    """The rows a run on `device_type` gets when --rows is not given: all of
    them on CUDA, all but the GPU-only ones on the CPU."""
    return [name for name, row in ROWS.items()
            if device_type == "cuda" or not row.gpu_only]


def parse_list(text, allowed, what):
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(allowed)}")
    return items


def main(argv=None):
    global _progress
    parser = argparse.ArgumentParser(
        description="Benchmark deeprnn against torch.nn (same weights, same "
        "process). Ratio = torch.nn median / deeprnn median; above 1 means "
        "deeprnn is faster.")
    parser.add_argument(
        "--rows", default=None,
        type=lambda s: parse_list(s, list(ROWS), "row"),
        help="comma-separated rows (default: every row the device runs): "
        + ", ".join(f"{r.name} ({r.describe()})" for r in ROWS.values()))
    parser.add_argument(
        "--modes", default=",".join(MODES),
        type=lambda s: parse_list(s, list(MODES), "mode"),
        help="comma-separated modes: " + ", ".join(MODES))
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per side (default 7; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up runs per side (default 2; 1 with "
                        "--quick)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and warm-ups")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N) (default: torch's "
                        "default)")
    parser.add_argument(
        "--dtype", default=["float32"],
        type=lambda s: parse_list(s, list(DTYPES), "dtype"),
        help="comma-separated dtypes, each row run in each: "
        + ", ".join(DTYPES) + " (default float32; on a GPU the issue's grid "
        "is float32,bfloat16)")
    parser.add_argument(
        "--tf32", choices=["off", "on"], default="off",
        help="CUDA only: TF32 for float32 matmuls and cuDNN, set the same "
        "for both sides (torch.backends.cuda.matmul.allow_tf32 and "
        "torch.backends.cudnn.allow_tf32); default off, i.e. IEEE float32")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default) or cuda")
    parser.add_argument("--atol", type=float, default=None,
                        help="max abs diff allowed between the outputs "
                        "(default: 1e-4 float32, 1e-9 float64, 6e-2 "
                        "bfloat16)")
    parser.add_argument("--lib", default=None,
                        help="path of libdeeprnn.so (default: "
                        "$DEEPRNN_LIBRARY, else build/libdeeprnn.so, else "
                        "import deeprnn)")
    parser.add_argument("--json", default=os.path.join("out", "bench",
                                                       "bench.json"),
                        help="where to write all results and raw timings")
    parser.add_argument("--png", default=os.path.join("out", "bench",
                                                      "ratios.png"),
                        help="bar chart of the ratios")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lengths", choices=["none", "spread"], default="none",
        help="none: every sequence has T steps (default); spread: each "
        "batch gets lengths drawn from [T/4, T] in random order, deeprnn "
        "on the padded batch with lengths=, torch.nn through "
        "pack_padded_sequence/pad_packed_sequence")
    args = parser.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick
                                                          else 2)
    if repeats < 1 or warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    dtypes = [DTYPES[name] for name in args.dtype]

    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device {args.device}: {error}")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: only cpu and cuda are "
                     "supported")
    if args.rows is None:
        args.rows = default_rows(device.type)
    gpu_rows = [name for name in args.rows if ROWS[name].gpu_only]
    if gpu_rows and device.type != "cuda":
        parser.error(f"--rows {','.join(gpu_rows)}: GPU-only rows "
                     f"({ROWS[gpu_rows[0]].describe()}); use --device cuda")
    if args.tf32 == "on" and device.type != "cuda":
        parser.error("--tf32 on: TF32 is a CUDA setting; the CPU runs "
                     "IEEE float32")

    isa_note = ""
    if torch.bfloat16 in dtypes and device.type == "cpu":
        isa_note = guard_against_unusable_amx()
    source = load_deeprnn(args.lib)

    if device.type == "cuda":
        if not torch.cuda.is_available():
            fail("--device cuda: CUDA is not available here (torch "
                 f"{torch.__version__}, torch.version.cuda="
                 f"{torch.version.cuda}). Use --device cpu.")
        try:
            probe = torch.zeros(2, 1, 4, device=device)
            weights = [torch.zeros(4, 4, device=device),
                       torch.zeros(4, 4, device=device)]
            torch.ops.deeprnn.rnn_tanh(probe, None, weights, False, 1, 0.0,
                                       False, False, False)
        except Exception as error:
            fail("--device cuda: the deeprnn operators failed on CUDA "
                 "(is libdeeprnn built with DEEPRNN_CUDA=ON?): "
                 f"{type(error).__name__}: {str(error).splitlines()[0]}")
        torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
        torch.backends.cudnn.allow_tf32 = args.tf32 == "on"

    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(args.seed)

    machine = machine_description()
    print(f"machine : {machine['cpu']}, {machine['cores']} cores "
          f"({machine['platform']})")
    if machine["load_average"] is not None:
        print("load    : " + ", ".join(f"{v:.2f}"
                                       for v in machine["load_average"])
              + " (1, 5, 15 min)")
    print(f"torch   : {torch.__version__}")
    print(f"threads : {threads}"
          + ("" if args.threads is not None else " (torch default)"))
    print(f"dtype   : {','.join(args.dtype)}   device: {device}")
    fast_path = None
    if device.type == "cuda":
        print(f"tf32    : {args.tf32} (matmul and cuDNN, both sides)")
        if hasattr(torch.ops.deeprnn, "_cuda_fast_path"):
            fast_path = bool(torch.ops.deeprnn._cuda_fast_path())
            print("deeprnn CUDA fast path (persistent kernels): "
                  + ("on where a layer fits" if fast_path else "off"))
    cpu_gemm = None
    if device.type == "cpu" and hasattr(torch.ops.deeprnn, "_cpu_packed_gemm_library"):
        cpu_gemm = str(torch.ops.deeprnn._cpu_packed_gemm_library())
        print(f"gemm    : deeprnn's float32 GEMMs through {cpu_gemm} "
              "(MKL on Intel CPUs, oneDNN on others; DEEPRNN_CPU_GEMM)")
    if args.lengths == "spread":
        print("lengths : spread, fresh per batch from [T/4, T] in random "
              "order; torch.nn via pack_padded_sequence + "
              "pad_packed_sequence (both timed)")
    print(f"deeprnn : {source}")
    if isa_note:
        print(f"note    : {isa_note}")
    print(f"method  : {warmup} warm-up + {repeats} timed runs per side, "
          "alternated; medians")
    for name in args.rows:
        print(f"row     : {name:12s} {ROWS[name].describe()}")
    sys.stdout.flush()

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    jobs = [(dtype_name, r, m) for dtype_name in args.dtype
            for r in args.rows for m in args.modes]
    if tqdm is not None:
        _progress = tqdm(total=len(jobs) * 2, unit="pass", file=sys.stderr,
                         dynamic_ncols=True)

    results = []
    started = time.perf_counter()
    for job_index, (dtype_name, row_name, mode) in enumerate(jobs):
        row = ROWS[row_name]
        dtype = DTYPES[dtype_name]
        atol = args.atol if args.atol is not None else OUTPUT_ATOL[dtype]
        label = f"{row_name}/{mode}" + (f"/{dtype_name}"
                                        if len(args.dtype) > 1 else "")
        if _progress is not None:
            _progress.set_description(label)
        else:
            log(f"[{job_index + 1}/{len(jobs)}] {label} ...")
        ref = make_reference(row, mode, dtype, device)
        params = list(ref._flat_weights)
        output_width = row.hidden_size * (2 if row.bidirectional else 1)
        output_weight = torch.randn(row.seq_len, row.batch, output_width,
                                    dtype=dtype, device=device)
        torch_side = Side(
            "torch.nn", lambda b, train, ref=ref: torch_forward(ref, b),
            params, output_weight)
        deeprnn_side = Side(
            "deeprnn",
            lambda b, train, row=row, mode=mode, params=params:
                deeprnn_forward(mode, row, b, params, train),
            params, output_weight)

        check = check_agreement(row, mode, torch_side, deeprnn_side,
                                ref._flat_weights_names, dtype, device, atol,
                                args.lengths)
        saved = {
            side.name: saved_bytes(
                side, new_input(row, dtype, device, True, args.lengths))
            for side in (torch_side, deeprnn_side)
        }
        for pass_name in ("inference", "training"):
            times = time_pass(pass_name, torch_side, deeprnn_side, row, dtype,
                              device, warmup, repeats, args.lengths)
            medians = {name: statistics.median(ts)
                       for name, ts in times.items()}
            result = {
                "row": row_name + ("+lengths" if args.lengths != "none"
                                   else ""),
                "mode": mode,
                "dtype": dtype_name,
                "pass": pass_name,
                "shape": {
                    "seq_len": row.seq_len, "batch": row.batch,
                    "input_size": row.input_size,
                    "hidden_size": row.hidden_size,
                    "num_layers": row.num_layers,
                    "bidirectional": row.bidirectional,
                },
                "times_ms": times,
                "median_ms": medians,
                "ratio": medians["torch.nn"] / medians["deeprnn"],
                "check": check,
            }
            if pass_name == "training":
                result["saved"] = saved
            results.append(result)
            summary = (f"{label}/{pass_name}: torch.nn "
                       f"{medians['torch.nn']:.2f} ms, deeprnn "
                       f"{medians['deeprnn']:.2f} ms, ratio "
                       f"{result['ratio']:.2f}")
            if _progress is not None:
                _progress.update(1)
            log(summary)
        del ref, torch_side, deeprnn_side, params
    if _progress is not None:
        _progress.close()
        _progress = None
    elapsed = time.perf_counter() - started

    config = {
        "rows": args.rows, "modes": args.modes, "repeats": repeats,
        "warmup": warmup, "threads": threads, "dtypes": args.dtype,
        "device": str(device), "atol": args.atol, "seed": args.seed,
        "tf32": args.tf32 if device.type == "cuda" else None,
        "cuda_fast_path": fast_path,
        "cpu_gemm": cpu_gemm,
        "timing": ("CUDA events" if device.type == "cuda"
                   else "time.perf_counter"),
        "deeprnn": source, "elapsed_s": elapsed, "isa_note": isa_note,
        "lengths": args.lengths,
        "ratio": "torch.nn median / deeprnn median (>1: deeprnn faster)",
        "saved_bytes": "distinct storages saved for backward by one "
                       "training forward, excluding parameters and input",
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)),
                    exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "config": config,
                       "results": results}, f, indent=2)
        print(f"\nwrote {args.json}")
    if args.png:
        title = (f"deeprnn vs torch.nn, {','.join(args.dtype)}, "
                 f"{threads} threads, {machine['cpu']}")
        if write_png(args.png, results, title):
            print(f"wrote {args.png}")
    print(f"total time {elapsed:.0f} s\n")
    print(f"ratio = torch.nn median / deeprnn median (above 1: deeprnn "
          f"faster); {','.join(args.dtype)}, {threads} threads, {device}"
          + (f", TF32 {args.tf32}" if device.type == "cuda" else "")
          + "\n")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
