"""The same seed gives bitwise the same outputs and gradients on CPU, dropout
included: twice in one process, and in two other processes. Another seed
gives other dropout masks, so other results.

test_dropout.py checks that a seed reproduces the forward outputs within one
process; here every gradient too, a 3-layer bidirectional stack in training
with dropout 0.3, and shapes large enough that the cell kernels split the
batch across threads and the directions run on separate threads (see
test_parity.py's threaded shapes).
"""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

from deeprnn_test_utils import MODES, call, make_pair, random_states

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, LAYERS, DROPOUT = 4, 300, 9, 64, 3, 0.3
SEED = 1234


def results(mode, seed, dtype=torch.float32):
    """Outputs and every gradient of one training step of `mode`; the
    weights and inputs are fixed, `seed` only draws the dropout masks."""
    torch.manual_seed(0)
    _, module = make_pair(mode, dtype=dtype, input_size=INPUT_SIZE,
                          hidden_size=HIDDEN_SIZE, num_layers=LAYERS,
                          bidirectional=True, dropout=DROPOUT)
    module.train()
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=dtype, requires_grad=True)
    h0, c0 = random_states(mode, BATCH, LAYERS, True, HIDDEN_SIZE, 0, dtype)
    h0.requires_grad_()
    if c0 is not None:
        c0.requires_grad_()
    upstream_seed = torch.randint(0, 2**31, ()).item()
    torch.manual_seed(seed)
    outputs = call(module, mode, x, h0, c0)
    generator = torch.Generator().manual_seed(upstream_seed)
    grads = [torch.randn(o.shape, dtype=dtype, generator=generator) for o in outputs]
    leaves = [t for t in (x, h0, c0) if t is not None] + list(module.parameters())
    gradients = torch.autograd.grad(outputs, leaves, grads)
    return [o.detach() for o in outputs] + list(gradients)


def all_results(seed):
    return {mode: results(mode, seed) for mode in MODES}


def _assert_bitwise_equal(first, second, what):
    assert len(first) == len(second), what
    for k, (a, b) in enumerate(zip(first, second)):
        assert a.dtype == b.dtype and a.shape == b.shape, (what, k)
        assert torch.equal(a, b), (
            f"{what}, result {k}: max |diff| {(a - b).abs().max().item()}")


@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_results_in_one_process(mode):
    first = results(mode, SEED)
    second = results(mode, SEED)
    _assert_bitwise_equal(first, second, mode)
    # Results are not trivially equal: dropout was active, and another seed
    # draws other masks, which change the outputs and every gradient of the
    # layers below the top one.
    other = results(mode, SEED + 1)
    assert not torch.equal(first[0], other[0])
    changed = sum(not torch.equal(a, b) for a, b in zip(first, other))
    assert changed == len(first), f"{changed} of {len(first)} results changed"


_CHILD = r"""
import importlib.util, sys
import torch

ops_dir, tests_dir, out, mkldnn, threads = sys.argv[1:6]
# The parent's settings: oneDNN on or off (see conftest.py), and its thread
# count, which sets how the kernels and GEMMs split their work.
torch.backends.mkldnn.enabled = mkldnn == "1"
torch.set_num_threads(int(threads))
try:
    import deeprnn
except ModuleNotFoundError:
    spec = importlib.util.spec_from_file_location(
        "deeprnn", ops_dir + "/__init__.py", submodule_search_locations=[ops_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules["deeprnn"] = module
    spec.loader.exec_module(module)
sys.path.insert(0, tests_dir)
import test_determinism

torch.save(test_determinism.all_results(test_determinism.SEED), out)
"""


def test_same_seed_same_results_in_other_processes(tmp_path):
    import deeprnn

    env = dict(os.environ)
    env["DEEPRNN_LIBRARY"] = deeprnn._library_path
    ops_dir = str(pathlib.Path(deeprnn.__file__).resolve().parent)
    tests_dir = str(pathlib.Path(__file__).resolve().parent)
    outs = [tmp_path / f"child{i}.pt" for i in range(2)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, ops_dir, tests_dir, str(out),
             "1" if torch.backends.mkldnn.enabled else "0",
             str(torch.get_num_threads())],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for out in outs
    ]
    # Computed here meanwhile, with the same settings.
    here = all_results(SEED)
    for child in children:
        log, _ = child.communicate(timeout=300)
        assert child.returncode == 0, log
    for out in outs:
        theirs = torch.load(out)
        assert sorted(theirs) == sorted(here)
        for mode in MODES:
            _assert_bitwise_equal(theirs[mode], here[mode], f"{mode} in {out.name}")
