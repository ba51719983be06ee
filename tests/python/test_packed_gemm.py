"""The CPU kernels' GEMM paths (float32): weights packed once per layer (W_hh
for the recurrent GEMM from batch 32, W_ih for an inference's input
projection when it takes several chunks of at least 32 rows) by MKL or by
oneDNN, the larger plain GEMMs through oneDNN where it packs, and the plain
at::mm fallback. Which library packs is chosen per process: MKL on Intel
CPUs, oneDNN on others (MKL runs AVX2 kernels there), DEEPRNN_CPU_GEMM
overriding. The parity tests run the process's choice; here the large-shape
parity tests also run under each library and under the fallback."""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

import deeprnn  # noqa: F401  (loads the operators)

TESTS = pathlib.Path(__file__).resolve().parent


def _env(**variables):
    env = dict(os.environ)
    env.pop("DEEPRNN_CPU_GEMM", None)
    env.pop("DEEPRNN_DISABLE_PACKED_GEMM", None)
    env.update(variables)
    return env


def _library_in_child(**variables):
    code = "import deeprnn, torch; print(torch.ops.deeprnn._cpu_packed_gemm_library())"
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env(**variables),
        capture_output=True, text=True, cwd=TESTS)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


def _genuine_intel():
    with open("/proc/cpuinfo") as cpuinfo:
        return any(line.split(":")[-1].strip() == "GenuineIntel"
                   for line in cpuinfo if line.startswith("vendor_id"))


MKL = torch.backends.mkl.is_available()
ONEDNN = torch.backends.mkldnn.is_available()


def test_packed_gemm_is_used_exactly_where_torch_has_mkl_or_onednn():
    assert torch.ops.deeprnn._cpu_packed_gemm() == (MKL or ONEDNN)


def test_library_by_default_is_mkl_on_intel_and_onednn_elsewhere():
    if MKL and (_genuine_intel() or not ONEDNN):
        expected = "mkl"
    else:
        expected = "onednn" if ONEDNN else "none"
    for variables in ({}, {"DEEPRNN_CPU_GEMM": "auto"}):
        library, stderr = _library_in_child(**variables)
        assert library == expected, variables
        assert "DEEPRNN_CPU_GEMM" not in stderr, stderr


def test_environment_variable_picks_the_library():
    assert _library_in_child(DEEPRNN_CPU_GEMM="mkl")[0] == ("mkl" if MKL else "none")
    assert _library_in_child(DEEPRNN_CPU_GEMM="onednn")[0] == ("onednn" if ONEDNN else "none")
    library, warning = _library_in_child(DEEPRNN_CPU_GEMM="openblas")
    assert library == _library_in_child()[0]
    assert "DEEPRNN_CPU_GEMM must be auto, mkl or onednn, got 'openblas'" in warning


def test_environment_variable_disables_packed_gemm():
    code = "import deeprnn, torch; print(torch.ops.deeprnn._cpu_packed_gemm())"
    for gemm in ("auto", "mkl", "onednn"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=_env(DEEPRNN_DISABLE_PACKED_GEMM="1", DEEPRNN_CPU_GEMM=gemm),
            capture_output=True, text=True, cwd=TESTS)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "False", gemm


@pytest.mark.parametrize("library", ["none", "mkl", "onednn"])
def test_each_library_matches_torch_nn_on_large_shapes(library):
    if library == "mkl" and not MKL or library == "onednn" and not ONEDNN:
        pytest.skip(f"this torch build carries no {library}")
    variables = (dict(DEEPRNN_DISABLE_PACKED_GEMM="1") if library == "none"
                 else dict(DEEPRNN_CPU_GEMM=library))
    assert _library_in_child(**variables)[0] == library
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(TESTS / "test_parity.py"), "-k",
         "threaded or inference_parity or vendor_gemm_shapes"],
        env=_env(**variables), capture_output=True, text=True, cwd=TESTS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
