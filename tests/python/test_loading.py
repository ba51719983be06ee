"""Loading the library: clear errors when it is missing or built for another torch.

Each case runs in a fresh interpreter with a copy of the package in a
temporary folder, so the library state of this process is not touched.
"""

import os
import shutil
import subprocess
import sys

import torch

import deeprnn

PACKAGE_DIR = os.path.dirname(os.path.abspath(deeprnn.__file__))


def _copy_package(root, library=None, built_for=None):
    target = os.path.join(root, "deeprnn")
    os.makedirs(target)
    for name in ("__init__.py", "functional.py", "modules.py"):
        shutil.copy(os.path.join(PACKAGE_DIR, name), target)
    if library is not None:
        shutil.copy(library, os.path.join(target, "libdeeprnn.so"))
    if built_for is not None:
        with open(os.path.join(target, "_build_info.py"), "w") as f:
            f.write(f"TORCH_VERSION = {built_for!r}\n")
    return target


def _import(root, env_library=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root)
    env.pop("DEEPRNN_LIBRARY", None)
    if env_library is not None:
        env["DEEPRNN_LIBRARY"] = str(env_library)
    code = (
        "import torch\n"
        "try:\n"
        "    import deeprnn\n"
        "except ImportError as error:\n"
        "    print('IMPORT ERROR:', error)\n"
        "else:\n"
        "    print('LOADED', deeprnn._library_path, deeprnn.LSTM(3, 4)(torch.randn(2, 1, 3))[0].shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_packaged_library_loads(tmp_path):
    target = _copy_package(tmp_path, library=deeprnn._library_path,
                           built_for=torch.__version__)
    out = _import(tmp_path)
    assert out.startswith("LOADED " + os.path.join(target, "libdeeprnn.so"))
    assert "torch.Size([2, 1, 4])" in out


def test_environment_variable_wins(tmp_path):
    _copy_package(tmp_path)  # no library next to the package
    out = _import(tmp_path, env_library=deeprnn._library_path)
    assert out.startswith(f"LOADED {os.path.abspath(deeprnn._library_path)}")


def test_missing_library_is_a_clear_import_error(tmp_path):
    target = _copy_package(tmp_path)
    out = _import(tmp_path)
    assert "IMPORT ERROR" in out
    assert os.path.join(target, "libdeeprnn.so") in out
    assert "scripts/setup.sh" in out and "pip install ." in out

    missing = tmp_path / "nowhere" / "libdeeprnn.so"
    out = _import(tmp_path, env_library=missing)
    assert "IMPORT ERROR" in out and str(missing) in out and "DEEPRNN_LIBRARY" in out


def test_library_built_for_another_torch(tmp_path):
    _copy_package(tmp_path, library=deeprnn._library_path, built_for="1.0.0+old")
    out = _import(tmp_path)
    assert "IMPORT ERROR" in out
    assert "1.0.0+old" in out and torch.__version__ in out


def test_library_that_does_not_load(tmp_path):
    target = _copy_package(tmp_path, built_for=torch.__version__)
    with open(os.path.join(target, "libdeeprnn.so"), "wb") as f:
        f.write(b"not a shared library")
    out = _import(tmp_path)
    assert "IMPORT ERROR" in out and "could not load" in out
    assert torch.__version__ in out
