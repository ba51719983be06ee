"""The CPU kernels' two GEMM paths: MKL-packed weights (float32, where torch
carries MKL: W_hh for the recurrent GEMM from batch 32, W_ih for an
inference's input projection when it takes several chunks of at least 32
rows) and the plain at::mm fallback. The parity tests run the packed path on
their large shapes and the fallback on the small ones; here the fallback
also runs on the large shapes."""

import os
import pathlib
import subprocess
import sys

import torch

import deeprnn  # noqa: F401  (loads the operators)

TESTS = pathlib.Path(__file__).resolve().parent


def _env_without_packing():
    env = dict(os.environ)
    env["DEEPRNN_DISABLE_PACKED_GEMM"] = "1"
    return env


def test_packed_gemm_is_used_exactly_where_torch_has_mkl():
    assert torch.ops.deeprnn._cpu_packed_gemm() == torch.backends.mkl.is_available()


def test_environment_variable_disables_packed_gemm():
    code = "import deeprnn, torch; print(torch.ops.deeprnn._cpu_packed_gemm())"
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env_without_packing(),
        capture_output=True, text=True, cwd=TESTS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_fallback_matches_torch_nn_on_large_shapes():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(TESTS / "test_parity.py"), "-k",
         "threaded or inference_parity"],
        env=_env_without_packing(), capture_output=True, text=True, cwd=TESTS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
