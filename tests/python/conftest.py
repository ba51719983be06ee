"""pytest setup for the deeprnn Python tests.

``deeprnn`` must be importable: installed (``pip install .`` or
scripts/setup.sh), or, from a source checkout, the ``ops/`` folder with a
CMake-built library (``DEEPRNN_LIBRARY``, else ``build/libdeeprnn.so``).
Anything else is an error of the whole session, never a skip.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _import_from_source_tree():
    # The package's source folder is ops/, imported under the name deeprnn.
    if not os.environ.get("DEEPRNN_LIBRARY"):
        built = REPO_ROOT / "build" / "libdeeprnn.so"
        if built.is_file():
            os.environ["DEEPRNN_LIBRARY"] = str(built)
    spec = importlib.util.spec_from_file_location(
        "deeprnn",
        REPO_ROOT / "ops" / "__init__.py",
        submodule_search_locations=[str(REPO_ROOT / "ops")],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["deeprnn"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["deeprnn"]
        raise
    return module


# Test the library the build just made: the package's own copy (ops/ or
# site-packages) is only refreshed by setup.sh / pip, so after a rebuild it
# would silently test the previous code.
_BUILT = REPO_ROOT / "build" / "libdeeprnn.so"
if not os.environ.get("DEEPRNN_LIBRARY") and _BUILT.is_file():
    os.environ["DEEPRNN_LIBRARY"] = str(_BUILT)

try:
    import deeprnn  # noqa: F401
except ModuleNotFoundError as error:
    if error.name != "deeprnn":
        raise
    deeprnn = _import_from_source_tree()


def _onednn_bfloat16_gemm_works() -> bool:
    # Some virtual machines report AMX in cpuinfo without letting a process
    # use it; oneDNN then dies with SIGILL on its first bfloat16 GEMM (in
    # torch itself, not in deeprnn). Probe in a child process so that a crash
    # cannot take the test session down.
    probe = (
        "import torch; a = torch.randn(64, 64, dtype=torch.bfloat16); "
        "(a @ a).sum().item()"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True)
    return result.returncode == 0


ONEDNN_DISABLED = False
if not _onednn_bfloat16_gemm_works():
    import torch

    # ATen then uses its own bfloat16 GEMM; everything else is unchanged.
    torch.backends.mkldnn.enabled = False
    ONEDNN_DISABLED = True


def pytest_report_header(config):
    lines = [
        f"deeprnn {deeprnn.__version__} from {os.path.dirname(deeprnn.__file__)}, "
        f"library {deeprnn._library_path}"
    ]
    if ONEDNN_DISABLED:
        lines.append(
            "oneDNN disabled (torch.backends.mkldnn.enabled = False): a bfloat16 "
            "GEMM crashed with oneDNN on this machine (AMX reported but unusable)"
        )
    return lines


@pytest.fixture
def backward_chunk_bytes():
    """Sets the CPU backward loop's chunk budget (deeprnn._cpu_backward_chunk_bytes)
    through the function it yields, with the fused step off (its loop keeps
    every step, unchunked); restores both after."""
    import torch

    fused = torch.ops.deeprnn._cpu_fused_step(0)
    previous = torch.ops.deeprnn._cpu_backward_chunk_bytes(-1)
    yield torch.ops.deeprnn._cpu_backward_chunk_bytes
    torch.ops.deeprnn._cpu_backward_chunk_bytes(previous)
    torch.ops.deeprnn._cpu_fused_step(fused)


@pytest.fixture
def fused_step_off():
    """The CPU's fused small-batch step switched off (deeprnn._cpu_fused_step)
    so that the general loop runs; restored after."""
    import torch

    previous = torch.ops.deeprnn._cpu_fused_step(0)
    yield
    torch.ops.deeprnn._cpu_fused_step(previous)


@pytest.fixture
def poisoned_buffers():
    """Every CPU buffer from deeprnn's buffer cache (the reserve, the kernels'
    scratch; cpu/buffer_cache.h) comes filled with NaNs while the test runs
    (deeprnn._cpu_buffer_cache_poison), so that an element a kernel reads
    before writing it shows in the results; restored after."""
    import torch

    previous = torch.ops.deeprnn._cpu_buffer_cache_poison(1)
    yield
    torch.ops.deeprnn._cpu_buffer_cache_poison(previous)
