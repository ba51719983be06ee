"""Packaging for deeprnn.

The Python package lives in ``ops/`` and is installed as ``deeprnn``. Its
native part, ``libdeeprnn.so``, is built by the top-level CMake project (the
same build that ``scripts/setup.sh`` and the C++ tests use), never a second
time through ``torch.utils.cpp_extension``: a LibTorch translation unit costs
tens of seconds on two cores.

torch must already be installed in the environment that builds the package,
so build without isolation:

    pip install --no-build-isolation .        # a regular install
    pip install --no-build-isolation -e .     # editable, for development

Environment variables:
    DEEPRNN_BUILD_DIR   CMake build directory (default: ``build`` at the
                        repository root, shared with scripts/setup.sh)
    DEEPRNN_JOBS        parallel build jobs (default: number of CPUs)
    DEEPRNN_CMAKE_ARGS  extra arguments for the first CMake configure
    DEEPRNN_CUDA        AUTO (default), ON or OFF: the CUDA kernels. AUTO
                        builds them when torch is a CUDA build and nvcc is
                        found; ON fails the build otherwise. Passed to CMake
                        (also into an existing build directory's cache).
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PACKAGE = "deeprnn"
LIBRARY_FILE = "libdeeprnn.so"
BUILD_INFO_FILE = "_build_info.py"


def _import_torch():
    try:
        import torch  # noqa: F401
    except ImportError as error:
        raise RuntimeError(
            "deeprnn builds against the torch installed in this environment, "
            "but torch cannot be imported here. Install torch first, then "
            "build without isolation: pip install --no-build-isolation ."
        ) from error
    return torch


def _build_dir() -> Path:
    build_dir = Path(os.environ.get("DEEPRNN_BUILD_DIR", "build"))
    if not build_dir.is_absolute():
        build_dir = ROOT / build_dir
    return build_dir


def _jobs() -> str:
    return os.environ.get("DEEPRNN_JOBS") or str(os.cpu_count() or 1)


def _cuda_option():
    """-DDEEPRNN_CUDA=... from the environment, or None when not set."""
    value = os.environ.get("DEEPRNN_CUDA", "").strip()
    if not value:
        return None
    if value.upper() not in ("AUTO", "ON", "OFF"):
        raise RuntimeError(
            f"DEEPRNN_CUDA must be AUTO, ON or OFF, got {value!r}")
    return f"-DDEEPRNN_CUDA={value.upper()}"


class CMakeExtension(Extension):
    """libdeeprnn, built by the top-level CMakeLists.txt."""

    def __init__(self, name: str, target: str):
        super().__init__(name, sources=[])
        self.target = target


class CMakeBuild(build_ext):
    """Drives the CMake build and ships libdeeprnn.so inside the package."""

    def get_ext_filename(self, fullname):
        # A plain shared library loaded with torch.ops.load_library, not a
        # Python extension module: no ABI tag in its name.
        # (setuptools asks both with the full dotted name and with its last
        # component.)
        *package, name = fullname.split(".")
        if name == "libdeeprnn":
            return os.path.join(*package, LIBRARY_FILE)
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)
        torch = _import_torch()
        build_dir = _build_dir()
        self._configure(torch, build_dir)
        self._run(["cmake", "--build", str(build_dir), "--target", ext.target,
                   "-j", _jobs()])

        built = build_dir / LIBRARY_FILE
        if not built.exists():
            raise RuntimeError(f"the CMake build did not produce {built}")
        destination = Path(self.get_ext_fullpath(ext.name))
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, destination)
        self._write_build_info(destination.parent, torch.__version__)

    def copy_extensions_to_source(self):
        # Editable / in-place: ops/libdeeprnn.so and ops/_build_info.py.
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        package_dir = Path(build_py.get_package_dir(PACKAGE))
        source = Path(self.build_lib) / PACKAGE / BUILD_INFO_FILE
        if source.exists():
            shutil.copy2(source, package_dir / BUILD_INFO_FILE)

    def get_outputs(self):
        outputs = super().get_outputs()
        if not self.inplace:
            outputs.append(str(Path(self.build_lib) / PACKAGE / BUILD_INFO_FILE))
        return outputs

    @staticmethod
    def _write_build_info(package_dir: Path, torch_version: str):
        (package_dir / BUILD_INFO_FILE).write_text(
            "# Written by setup.py at build time; do not edit.\n"
            f"TORCH_VERSION = {torch_version!r}\n"
        )

    def _configure(self, torch, build_dir: Path):
        cuda = _cuda_option()
        if (build_dir / "CMakeCache.txt").exists():
            # Reuse the existing configuration (scripts/setup.sh or an
            # earlier build made it); CMake re-runs itself when needed.
            # An explicit DEEPRNN_CUDA still reaches its cache.
            if cuda:
                self._run(["cmake", "-S", str(ROOT), "-B", str(build_dir),
                           cuda])
            return
        args = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            # A user install needs no GoogleTest; scripts/setup.sh turns the
            # tests on in its own configure.
            "-DDEEPRNN_BUILD_TESTS=OFF",
        ]
        if shutil.which("ninja"):
            args += ["-G", "Ninja"]
        if cuda:
            args.append(cuda)
        args += shlex.split(os.environ.get("DEEPRNN_CMAKE_ARGS", ""))
        self._run(args)

    @staticmethod
    def _run(args):
        print("deeprnn:", " ".join(shlex.quote(a) for a in args), flush=True)
        subprocess.run(args, cwd=ROOT, check=True)


setup(
    name="deeprnn",
    version="0.1.0",
    description=(
        "Stacked and bidirectional RNN, GRU and LSTM operators for PyTorch "
        "(LibTorch C++ extension)"
    ),
    long_description=(ROOT / "README.md").read_text(encoding="utf-8")
    if (ROOT / "README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=[PACKAGE],
    package_dir={PACKAGE: "ops"},
    ext_modules=[CMakeExtension(f"{PACKAGE}.libdeeprnn", target="deeprnn")],
    cmdclass={"build_ext": CMakeBuild},
    # setuptools' own scratch space, apart from the CMake build in build/.
    options={"build": {"build_base": "build-setuptools"}},
    zip_safe=False,
)
