"""Deployment without Python: the deeprnn-run CLI and the installed CMake package.

deeprnn-run loads TorchScript models (scripted and traced here) and
AOTInductor packages (torch.export, then aoti_compile_and_package) in a C++
process that has nothing but libdeeprnn and LibTorch, runs them on inputs
saved with torch.save and writes the outputs back; they must match the
Python modules. The installed package (``cmake --install``) must let a
separate CMake project find_package(deeprnn) and call the operators.

The CLI and the install come from the CMake build directory in
``DEEPRNN_BUILD_DIR`` (default ``build/`` at the repository root); a build
without the CLI is a failure, not a skip (scripts/setup.sh builds it).
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Optional, Tuple

import pytest
import torch
from torch import Tensor

import deeprnn
from deeprnn_test_utils import MODES, module_kwargs, random_states

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]

SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE = 5, 3, 4, 6
# float64 end to end; the CLI runs one thread, Python may run several, and
# the GEMMs may then sum in another order.
TOLERANCE = dict(rtol=1e-12, atol=1e-12)


def _build_dir() -> pathlib.Path:
    build_dir = pathlib.Path(os.environ.get("DEEPRNN_BUILD_DIR", "build"))
    return build_dir if build_dir.is_absolute() else REPO_ROOT / build_dir


def _clean_env():
    # The binaries must find libdeeprnn and libtorch through their own
    # RPATH/RUNPATH, as they will on a user's machine.
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    return env


@pytest.fixture(scope="module")
def cli() -> pathlib.Path:
    path = _build_dir() / "deeprnn-run"
    if not path.is_file():
        pytest.fail(
            f"{path} does not exist: build the CLI with "
            f"`cmake --build {_build_dir()} --target deeprnn-run` "
            "(CMake option DEEPRNN_BUILD_TOOLS=ON, the default), or point "
            "DEEPRNN_BUILD_DIR at the build directory that has it"
        )
    return path


def run_cli(cli, *args, timeout=120):
    return subprocess.run(
        [str(cli), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(),
    )


def describe(name, value):
    """The lines deeprnn-run prints for ``value``."""
    if isinstance(value, Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        shape = ", ".join(str(size) for size in value.shape)
        return [f"{name}: Tensor {dtype} [{shape}]"]
    if isinstance(value, tuple):
        lines = [f"{name}: tuple of {len(value)}"]
        for index, element in enumerate(value):
            lines += describe(f"{name}[{index}]", element)
        return lines
    raise AssertionError(f"unexpected output type {type(value)}")


def output_lines(result):
    if isinstance(result, tuple):
        lines = []
        for index, element in enumerate(result):
            lines += describe(f"output[{index}]", element)
        return lines
    return describe("output", result)


def assert_same(got, expected, where="output"):
    """Same nesting (tuples stay tuples), dtypes, shapes and values."""
    if isinstance(expected, Tensor):
        assert isinstance(got, Tensor), f"{where}: expected a tensor, got {type(got)}"
        assert got.dtype == expected.dtype, where
        torch.testing.assert_close(got, expected, **TOLERANCE, msg=lambda m: f"{where}: {m}")
        return
    assert isinstance(got, tuple) and isinstance(expected, tuple), (
        f"{where}: expected {type(expected)}, got {type(got)}")
    assert len(got) == len(expected), where
    for index, (g, e) in enumerate(zip(got, expected)):
        assert_same(g, e, f"{where}[{index}]")


def run_and_compare(cli, tmp_path, model, saved_inputs, expected, method="forward"):
    """Saves the inputs, runs the saved ``model`` file through the CLI with
    --output and checks the printed listing, the timing line and the
    outputs against ``expected`` (the eager result)."""
    inputs_path = tmp_path / "inputs.pt"
    output_path = tmp_path / "outputs.pt"
    torch.save(saved_inputs, inputs_path)
    result = run_cli(cli, model, inputs_path, "--output", output_path, "--threads", "1",
                     "--warmup", "1", "--repeat", "2", "--method", method)
    assert result.returncode == 0, result.stderr
    stdout = result.stdout
    for line in output_lines(expected):
        assert line in stdout.splitlines(), f"missing {line!r} in:\n{stdout}"
    assert re.search(
        r"^time: median \d+\.\d{3} ms over 2 calls \(1 warmup, 1 thread\)$", stdout,
        re.MULTILINE), stdout
    assert_same(torch.load(output_path), expected)
    return stdout


def _configs():
    for mode in MODES:
        yield pytest.param(mode, dict(), False, id=f"{mode}-plain-no-h0")
        yield pytest.param(mode, dict(num_layers=2, bidirectional=True), True,
                           id=f"{mode}-stacked-bi")
        yield pytest.param(mode, dict(num_layers=3, batch_first=True), True,
                           id=f"{mode}-stacked-batch-first")
        if mode == "LSTM":
            yield pytest.param(mode, dict(num_layers=2, bidirectional=True, proj_size=3,
                                          batch_first=True), True, id=f"{mode}-proj-bi-bf")


def _module(mode, config):
    kwargs = module_kwargs(mode, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, **config)
    cls = {"LSTM": deeprnn.LSTM, "GRU": deeprnn.GRU}.get(mode, deeprnn.RNN)
    return cls(**kwargs, dtype=torch.float64).eval()


@pytest.mark.parametrize("kind", ["script", "trace"])
@pytest.mark.parametrize("mode, config, with_h0", list(_configs()))
def test_cli_matches_eager(cli, tmp_path, mode, config, with_h0, kind):
    torch.manual_seed(51)
    module = _module(mode, config)
    batch_first = config.get("batch_first", False)
    shape = (BATCH, SEQ_LEN, INPUT_SIZE) if batch_first else (SEQ_LEN, BATCH, INPUT_SIZE)
    x = torch.randn(shape, dtype=torch.float64)
    if with_h0:
        h0, c0 = random_states(mode, BATCH, config.get("num_layers", 1),
                               config.get("bidirectional", False), HIDDEN_SIZE,
                               config.get("proj_size", 0), torch.float64)
        inputs = (x, (h0, c0)) if mode == "LSTM" else (x, h0)
    else:
        inputs = (x,)
    with torch.no_grad():
        expected = module(*inputs)

    if kind == "script":
        saved = torch.jit.script(module)
    else:
        saved = torch.jit.trace(module, inputs)
    model_path = tmp_path / "model.pt"
    saved.save(str(model_path))

    # One bare tensor is the only argument; a tuple is the argument list.
    saved_inputs = x if not with_h0 else inputs
    stdout = run_and_compare(cli, tmp_path, model_path, saved_inputs, expected)
    assert f"model: {model_path} (method forward, {len(inputs)} input" in stdout
    assert f"input[0]: Tensor float64 [{', '.join(map(str, shape))}]" in stdout


class Tagger(torch.nn.Module):
    """A user model: deeprnn modules among torch.nn layers, states passed in."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(INPUT_SIZE, 8)
        self.lstm = deeprnn.LSTM(8, HIDDEN_SIZE, num_layers=2, bidirectional=True,
                                 batch_first=True, proj_size=3)
        self.gru = deeprnn.GRU(6, 5, batch_first=True)
        self.rnn = deeprnn.RNN(5, 4, nonlinearity="relu", batch_first=True)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: Tensor, state: Tuple[Tensor, Tensor], g0: Tensor,
                r0: Optional[Tensor] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]:
        y, (h, c) = self.lstm(torch.tanh(self.embed(x)), state)
        y, g = self.gru(y, g0)
        y, r = self.rnn(y, r0)
        return self.head(y), (h, c, g + r.sum())

    @torch.jit.export
    def encode(self, x: Tensor) -> Tensor:
        return self.lstm(torch.tanh(self.embed(x)))[0]


def _tagger_inputs():
    x = torch.randn(BATCH, SEQ_LEN, INPUT_SIZE, dtype=torch.float64)
    h0 = torch.randn(4, BATCH, 3, dtype=torch.float64)
    c0 = torch.randn(4, BATCH, HIDDEN_SIZE, dtype=torch.float64)
    g0 = torch.randn(1, BATCH, 5, dtype=torch.float64)
    r0 = torch.randn(1, BATCH, 4, dtype=torch.float64)
    return x, (h0, c0), g0, r0


def test_cli_user_model_scripted(cli, tmp_path):
    torch.manual_seed(52)
    model = Tagger().double().eval()
    inputs = _tagger_inputs()
    with torch.no_grad():
        expected = model(*inputs)
        expected_encoded = model.encode(inputs[0])
    model_path = tmp_path / "tagger.pt"
    torch.jit.script(model).save(str(model_path))
    # A list works as the argument list too.
    run_and_compare(cli, tmp_path, model_path, list(inputs), expected)
    # The optional state left out: the schema's default applies.
    with torch.no_grad():
        expected_default = model(*inputs[:3])
    run_and_compare(cli, tmp_path, model_path, inputs[:3], expected_default)
    # Another method than forward.
    stdout = run_and_compare(cli, tmp_path, model_path, (inputs[0],), expected_encoded,
                             method="encode")
    assert "(method encode, 1 input)" in stdout


def test_cli_user_model_traced(cli, tmp_path):
    torch.manual_seed(53)
    model = Tagger().double().eval()
    inputs = _tagger_inputs()
    with torch.no_grad():
        expected = model(*inputs)
    model_path = tmp_path / "tagger_traced.pt"
    torch.jit.trace(model, inputs).save(str(model_path))
    run_and_compare(cli, tmp_path, model_path, inputs, expected)


def test_cli_help(cli):
    result = run_cli(cli, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: deeprnn-run MODEL.pt|MODEL.pt2 INPUTS.pt")
    for flag in ("--output", "--repeat", "--warmup", "--threads", "--method", "torch.save",
                 "AOTInductor"):
        assert flag in result.stdout


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A scripted LSTM and valid inputs for it, for the error cases."""
    torch.manual_seed(54)
    folder = tmp_path_factory.mktemp("small_model")
    module = deeprnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, dtype=torch.float64).eval()
    model_path = folder / "lstm.pt"
    torch.jit.script(module).save(str(model_path))
    inputs_path = folder / "inputs.pt"
    torch.save((torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=torch.float64),), inputs_path)
    wrong_path = folder / "wrong_inputs.pt"
    torch.save((torch.randn(SEQ_LEN, BATCH, INPUT_SIZE + 1, dtype=torch.float64),), wrong_path)
    garbage_path = folder / "garbage.pt"
    garbage_path.write_bytes(os.urandom(256))
    not_script_path = folder / "state_dict.pt"
    torch.save(module.state_dict(), not_script_path)
    return dict(model=model_path, inputs=inputs_path, wrong=wrong_path,
                garbage=garbage_path, not_script=not_script_path,
                missing=folder / "does_not_exist.pt")


# (arguments, exit status, text in stderr, usage shown); names refer to the
# small_model fixture.
ERROR_CASES = {
    "missing-model": (["missing", "inputs"], 2,
                      "cannot open model file '{missing}': No such file or directory", True),
    "missing-inputs": (["model", "missing"], 2,
                       "cannot open input file '{missing}': No such file or directory", True),
    "unknown-flag": (["model", "inputs", "--frobnicate", "3"], 2,
                     "unknown option '--frobnicate'", True),
    "single-dash-flag": (["model", "inputs", "-x"], 2, "unknown option '-x'", True),
    "bad-repeat": (["model", "inputs", "--repeat", "0"], 2,
                   "--repeat expects an integer >= 1, got '0'", True),
    "bad-threads": (["model", "inputs", "--threads=two"], 2,
                    "--threads expects an integer >= 1, got 'two'", True),
    "flag-without-value": (["model", "inputs", "--output"], 2, "--output needs a value", True),
    "one-positional": (["model"], 2, "expected 2 arguments, MODEL.pt and INPUTS.pt, got 1",
                       True),
    "three-positionals": (["model", "inputs", "inputs"], 2,
                          "expected 2 arguments, MODEL.pt and INPUTS.pt, got 3", True),
    "inputs-not-torch-save": (["model", "garbage"], 2,
                              "cannot read the inputs from '{garbage}'", True),
    "model-not-torchscript": (["not_script", "inputs"], 1,
                              "cannot load the model '{not_script}' (is it a TorchScript model",
                              False),
    "no-such-method": (["model", "inputs", "--method", "nope"], 1,
                       "the model '{model}' has no method 'nope'", False),
    "wrong-input-shape": (["model", "wrong"], 1, "input.size(-1) must be equal to input_size",
                          False),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_cli_errors(cli, small_model, case):
    arguments, status, message, usage = ERROR_CASES[case]
    arguments = [small_model.get(argument, argument) for argument in arguments]
    result = run_cli(cli, *arguments)
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("deeprnn-run: error: "), result.stderr
    assert message.format(**small_model) in result.stderr, result.stderr
    assert ("usage: deeprnn-run MODEL.pt|MODEL.pt2 INPUTS.pt" in result.stderr) == usage, result.stderr


# --- the installed CMake package --------------------------------------------


def _run(args, cwd=None, env=None, timeout=600):
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env or _clean_env(),
                            capture_output=True, text=True, timeout=timeout)
    return result


def _cmake_generator():
    return ["-G", "Ninja"] if shutil.which("ninja") else []


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``cmake --install`` of the build into a fresh prefix."""
    build_dir = _build_dir()
    if not (build_dir / "CMakeCache.txt").is_file():
        pytest.fail(f"{build_dir} is not a CMake build directory (set DEEPRNN_BUILD_DIR)")
    prefix = tmp_path_factory.mktemp("prefix")
    result = _run(["cmake", "--install", build_dir, "--prefix", prefix])
    assert result.returncode == 0, result.stdout + result.stderr
    return prefix


@pytest.fixture(scope="module")
def consumer(installed, tmp_path_factory):
    """tests/consumer configured against the install and built (one LibTorch
    translation unit: about a minute)."""
    build = tmp_path_factory.mktemp("consumer_build")
    configure = _run(["cmake", "-S", REPO_ROOT / "tests" / "consumer", "-B", build,
                      *_cmake_generator(), "-DCMAKE_BUILD_TYPE=Release",
                      f"-DCMAKE_PREFIX_PATH={installed};{torch.utils.cmake_prefix_path}"])
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compile_ = _run(["cmake", "--build", build])
    assert compile_.returncode == 0, compile_.stdout + compile_.stderr
    return build / "consumer"


def test_install_tree(installed):
    for relative in ("lib/libdeeprnn.so", "bin/deeprnn-run",
                     "include/deeprnn/deeprnn.h", "lib/cmake/deeprnn/deeprnnConfig.cmake",
                     "lib/cmake/deeprnn/deeprnnConfigVersion.cmake",
                     "lib/cmake/deeprnn/deeprnnTargets.cmake"):
        assert (installed / relative).is_file(), relative
    # Every public header is installed with the headers it includes.
    include = installed / "include"
    sources = sorted((REPO_ROOT / "csrc" / "deeprnn").glob("*.h"))
    assert sources
    for source in sources:
        header = include / "deeprnn" / source.name
        assert header.is_file(), header
        for name in re.findall(r'^#include [<"](deeprnn/[^>"]+)[>"]', header.read_text(),
                               re.MULTILINE):
            assert (include / name).is_file(), f"{header} includes {name}, not installed"
        # Nothing from the library's private folders.
        assert not re.search(r'^#include [<"](common|cpu|ops|meta|autograd|modules|cuda)/',
                             header.read_text(), re.MULTILINE), header


def test_installed_cli_runs_model(installed, small_model, tmp_path):
    # From the install tree, with no LD_LIBRARY_PATH: its RUNPATH finds
    # libdeeprnn beside it and libtorch where it was built.
    output_path = tmp_path / "out.pt"
    result = run_cli(installed / "bin" / "deeprnn-run", small_model["model"],
                     small_model["inputs"], "--output", output_path, "--repeat", "1")
    assert result.returncode == 0, result.stderr
    module = torch.jit.load(str(small_model["model"]))
    (x,) = torch.load(small_model["inputs"])
    with torch.no_grad():
        expected = module(x)
    assert_same(torch.load(output_path), expected)


def test_consumer_project(consumer):
    result = _run([consumer])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout.splitlines(), result.stdout
    # --as-needed kept libdeeprnn, through the link anchor alone.
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed: cannot read the consumer's DT_NEEDED")
    dynamic = _run([readelf, "-d", consumer]).stdout
    assert "[libdeeprnn.so]" in dynamic, dynamic


def test_consumer_finds_torch_through_python(installed, tmp_path):
    # Torch not on CMAKE_PREFIX_PATH: deeprnnConfig asks the Python
    # interpreter for torch's CMake prefix.
    result = _run(["cmake", "-S", REPO_ROOT / "tests" / "consumer", "-B", tmp_path / "b",
                   *_cmake_generator(), f"-DCMAKE_PREFIX_PATH={installed}",
                   f"-DPython3_EXECUTABLE={sys.executable}"])
    assert result.returncode == 0, result.stdout + result.stderr
    cache = (tmp_path / "b" / "CMakeCache.txt").read_text()
    torch_dir = pathlib.Path(torch.utils.cmake_prefix_path) / "Torch"
    assert f"Torch_DIR:PATH={torch_dir}" in cache


def test_consumer_without_torch_fails_clearly(installed, tmp_path):
    # No Torch on the paths and a "Python" that cannot import torch.
    result = _run(["cmake", "-S", REPO_ROOT / "tests" / "consumer", "-B", tmp_path / "b",
                   *_cmake_generator(), f"-DCMAKE_PREFIX_PATH={installed}",
                   "-DPython3_EXECUTABLE=/bin/false"])
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert "deeprnn needs LibTorch" in output, output
    assert "torch.utils.cmake_prefix_path" in output, output


def test_consumer_with_another_torch_fails_clearly(installed, tmp_path):
    # A Torch package of another version: libdeeprnn would not link or load
    # against it, so find_package(deeprnn) must refuse, naming both versions.
    fake = tmp_path / "fake_torch"
    fake.mkdir()
    (fake / "TorchConfig.cmake").write_text(
        "add_library(torch INTERFACE IMPORTED)\nset(Torch_FOUND TRUE)\n")
    (fake / "TorchConfigVersion.cmake").write_text(
        'set(PACKAGE_VERSION "1.0.0")\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n')
    result = _run(["cmake", "-S", REPO_ROOT / "tests" / "consumer", "-B", tmp_path / "b",
                   *_cmake_generator(), f"-DCMAKE_PREFIX_PATH={installed}",
                   f"-DTorch_DIR={fake}"])
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    built_for = torch.__version__.split("+")[0]
    assert f"deeprnn was built against Torch {built_for}" in output, output
    assert "this project found Torch 1.0.0" in output, output


class _ExportTagger(torch.nn.Module):
    """A tagger as users export it: a bidirectional LSTM, a GRU, a head."""

    def __init__(self):
        super().__init__()
        self.lstm = deeprnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True,
                                 batch_first=True, proj_size=3, dtype=torch.float64)
        self.gru = deeprnn.GRU(6, HIDDEN_SIZE, batch_first=True, dtype=torch.float64)
        self.head = torch.nn.Linear(HIDDEN_SIZE, 2, dtype=torch.float64)

    def forward(self, x: Tensor, h0: Tensor) -> Tuple[Tensor, Tensor]:
        y, _ = self.lstm(x)
        y, h = self.gru(y, h0)
        return self.head(y), h


def test_aoti_package_python_and_cli(cli, tmp_path):
    """torch.export -> AOTInductor package; Python and deeprnn-run run it."""
    torch.manual_seed(57)
    model = _ExportTagger().eval()
    batch = torch.export.Dim("batch", min=2, max=4096)
    steps = torch.export.Dim("steps", min=2, max=100_000)
    x = torch.randn(3, SEQ_LEN, INPUT_SIZE, dtype=torch.float64)
    h0 = torch.randn(1, 3, HIDDEN_SIZE, dtype=torch.float64)
    program = torch.export.export(
        model, (x, h0), dynamic_shapes={"x": {0: batch, 1: steps}, "h0": {1: batch}})
    package = torch._inductor.aoti_compile_and_package(
        program, package_path=str(tmp_path / "tagger.pt2"))
    runner = torch._inductor.aoti_load_package(package)
    # Other sizes than the example's: the dynamic dimensions stayed dynamic.
    x = torch.randn(5, 11, INPUT_SIZE, dtype=torch.float64)
    h0 = torch.randn(1, 5, HIDDEN_SIZE, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x, h0)
        for got, want in zip(runner(x, h0), expected):
            torch.testing.assert_close(got, want, **TOLERANCE)

    torch.save((x, h0), tmp_path / "inputs.pt")
    result = run_cli(cli, package, tmp_path / "inputs.pt", "--output",
                     tmp_path / "out.pt", "--threads", "1", "--repeat", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(AOTInductor package, 2 inputs)" in result.stdout
    assert "output[0]: Tensor float64 [5, 11, 2]" in result.stdout
    assert "output[1]: Tensor float64 [1, 5, 6]" in result.stdout
    outputs = torch.load(tmp_path / "out.pt")
    assert len(outputs) == 2
    for got, want in zip(outputs, expected):
        torch.testing.assert_close(got, want, **TOLERANCE)

    # --method is TorchScript's; a package has one entry point.
    result = run_cli(cli, package, tmp_path / "inputs.pt", "--method", "encode")
    assert result.returncode == 2 and "one entry point" in result.stderr
    # A file that is not an AOTInductor package.
    not_package = tmp_path / "not_a_package.pt2"
    torch.save(x, not_package)
    result = run_cli(cli, not_package, tmp_path / "inputs.pt")
    assert result.returncode == 1
    assert "cannot load the AOTInductor package" in result.stderr
