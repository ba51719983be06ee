"""A 100,000-step sequence (B = 1, H = 32, I = 8): forward and backward run
(no recursion, no stack overflow), the forward agrees with torch.nn, and the
memory they take is what the documented layouts predict.

Forward keeps the reserve (deeprnn.functional.reserve_size elements, see
csrc/common/config.h) and writes the output; nothing else of size T may stay
or be touched. Backward's workspace, from csrc/cpu/rnn_cpu.cpp: the
gradients of the gate pre-activations of every step, T*B*D*G*H elements
(twice that for GRU, whose n gate has a separate recurrent part), and the
input gradient T*B*I. Peak resident memory is measured in a child process
(VmHWM, reset before each phase through /proc/self/clear_refs) so the test
session's own allocations do not blur it.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import deeprnn

T, B, I, H = 100_000, 1, 8, 32
# Page rounding, allocator bookkeeping, the small per-step tensors.
SLACK_BYTES = 4 << 20
# Where the CPU GEMMs run through oneDNN (cpu/packed_gemm.h), the weight
# gradients dG^T X go in blocks of about 4 MiB of rows of dG and X, copied
# into oneDNN's tensors (dG's rows first made contiguous when they are
# strided, as with two directions), and oneDNN's primitive has a scratchpad:
# a workspace of a few blocks, whatever T. Measured: LSTM uni 4.3 MB, GRU
# bi 10.3 MB above the prediction.
ONEDNN_BLOCKS_BYTES = 3 * (4 << 20)

_CHILD = r"""
import importlib.util, json, sys, time
import torch

ops_dir = sys.argv[1]
try:
    import deeprnn
except ModuleNotFoundError:
    spec = importlib.util.spec_from_file_location(
        "deeprnn", ops_dir + "/__init__.py", submodule_search_locations=[ops_dir])
    deeprnn = importlib.util.module_from_spec(spec)
    sys.modules["deeprnn"] = deeprnn
    spec.loader.exec_module(deeprnn)

mode, bidirectional = sys.argv[2], sys.argv[3] == "1"
T, B, I, H = (int(v) for v in sys.argv[4:8])
D = 2 if bidirectional else 1
torch.set_num_threads(1)  # B = 1: nothing to share out, and CI-friendly


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(key + " missing from /proc/self/status")


def reset_peak():
    # "5" resets VmHWM to the current VmRSS (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


try:
    reset_peak()
except OSError as error:
    print(json.dumps({"no_clear_refs": str(error)}))
    sys.exit(0)

torch.manual_seed(0)
ours = getattr(deeprnn, mode)(I, H, bidirectional=bidirectional)
reference = getattr(torch.nn, mode)(I, H, bidirectional=bidirectional)
reference.load_state_dict(ours.state_dict())
# Warm-up: lazy initialisation (thread pools, MKL buffers, oneDNN's kernels
# and scratchpad) stays out of the measured phases. 20,000 steps take the
# GEMM paths of the measured call (oneDNN's from 4 Mi multiply-adds).
warm = torch.randn(20000, B, I, requires_grad=True)
out = ours(warm)[0]
out.backward(torch.randn_like(out))

x = torch.randn(T, B, I, requires_grad=True)
grad_output = torch.randn(T, B, D * H)
saved = []


def pack(t):
    saved.append(t.numel())
    return t


reset_peak()
before = status("VmRSS")
start = time.perf_counter()
with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    output, state = ours(x)
forward_s = time.perf_counter() - start
forward_growth = status("VmHWM") - before

reset_peak()
before = status("VmRSS")
start = time.perf_counter()
output.backward(grad_output)
backward_s = time.perf_counter() - start
backward_growth = status("VmHWM") - before

finite = bool(x.grad.isfinite().all()) and all(
    bool(p.grad.isfinite().all()) for p in ours.parameters())
start = time.perf_counter()
with torch.no_grad():
    ref_output, ref_state = reference(x)
reference_s = time.perf_counter() - start
hy = state[0] if mode == "LSTM" else state
ref_hy = ref_state[0] if mode == "LSTM" else ref_state
print(json.dumps({
    "saved_numels": saved,
    "element_size": output.element_size(),
    "forward_growth": forward_growth,
    "backward_growth": backward_growth,
    "forward_s": forward_s,
    "backward_s": backward_s,
    "reference_s": reference_s,
    "grads_finite": finite,
    "max_output_diff": (output - ref_output).abs().max().item(),
    "max_hy_diff": (hy - ref_hy).abs().max().item(),
}))
"""


def _child_env():
    env = dict(os.environ)
    env["DEEPRNN_LIBRARY"] = deeprnn._library_path
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.parametrize("mode,bidirectional", [("LSTM", False), ("GRU", True)],
                         ids=["LSTM-uni", "GRU-bi"])
def test_long_sequence_runs_and_uses_the_predicted_memory(mode, bidirectional):
    ops_dir = str(pathlib.Path(deeprnn.__file__).resolve().parent)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, ops_dir, mode, "1" if bidirectional else "0",
         str(T), str(B), str(I), str(H)],
        env=_child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"child exited with {result.returncode} (a stack overflow is -11):\n"
        f"{result.stdout}\n{result.stderr}")
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    if "no_clear_refs" in numbers:
        pytest.skip("cannot reset the peak RSS of a process here "
                    f"(/proc/self/clear_refs: {numbers['no_clear_refs']})")

    D, G = (2 if bidirectional else 1), {"LSTM": 4, "GRU": 3}[mode]
    size = numbers["element_size"]
    reserve = deeprnn.functional.reserve_size(
        mode.lower(), T, B, I, H, 0, 1, bidirectional, False)
    output_bytes = T * B * D * H * size
    dgates_bytes = (2 if mode == "GRU" else 1) * T * B * D * G * H * size
    dx_bytes = T * B * I * size
    forward_predicted = reserve * size + output_bytes
    backward_predicted = dgates_bytes + dx_bytes
    mb = 1e-6
    print(f"\n{mode} {'bi' if bidirectional else 'uni'} T={T} B={B} I={I} H={H}: "
          f"forward {numbers['forward_s']:.2f} s, backward "
          f"{numbers['backward_s']:.2f} s (torch.nn forward "
          f"{numbers['reference_s']:.2f} s); reserve {reserve * size * mb:.1f} MB "
          f"({reserve} elements); forward peak RSS growth "
          f"{numbers['forward_growth'] * mb:.1f} MB (predicted reserve + output "
          f"{forward_predicted * mb:.1f} MB); backward peak RSS growth "
          f"{numbers['backward_growth'] * mb:.1f} MB (predicted dgates + dx "
          f"{backward_predicted * mb:.1f} MB)")

    # The reserve autograd keeps is exactly the documented size.
    assert reserve in numbers["saved_numels"], (reserve, numbers["saved_numels"])
    assert numbers["forward_growth"] >= reserve * size
    assert numbers["forward_growth"] <= forward_predicted + SLACK_BYTES
    workspace = (ONEDNN_BLOCKS_BYTES
                 if torch.ops.deeprnn._cpu_packed_gemm_library() == "onednn" else 0)
    assert numbers["backward_growth"] <= backward_predicted + SLACK_BYTES + workspace
    assert numbers["grads_finite"]
    # 100,000 float32 steps from the same weights: rounding differences stay
    # bounded because the recurrence is contractive.
    assert numbers["max_output_diff"] < 1e-4, numbers["max_output_diff"]
    assert numbers["max_hy_diff"] < 1e-4, numbers["max_hy_diff"]
