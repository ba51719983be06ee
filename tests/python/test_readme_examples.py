"""The README's examples are real files, quoted verbatim, and they run.

The C++ example (examples/cpp/lstm_example.cpp) is built by CMake and run by
ctest (examples.lstm_example); the consumer project (tests/consumer) is built
against the installed package by test_deploy.py; here we check that the
README quotes them, and run every Python example.
"""

import os
import pathlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Each Python example, with lines its output must contain.
PYTHON_EXAMPLES = {
    "examples/python/lstm_example.py": [
        "output (5, 3, 40)",
        "h_n (4, 3, 20) c_n (4, 3, 20)",
        "match torch.nn.LSTM",
    ],
    "examples/python/packed_example.py": [
        "output (4, 9, 32) h_n (4, 4, 16)",
        "zero past each end: True",
        "h_n is the state at each sentence's last word: True",
        "lengths= and PackedSequence agree",
    ],
    "examples/python/layers_example.py": [
        "LSTM(3, [3, 2], num_layers=2, batch_first=True)",
        "output (4, 7, 2)",
        "h_n [(1, 4, 3), (1, 4, 2)]",
        "last (4, 4)",
        "last == h_n[-1][0] + h_n[-1][1]: True",
    ],
    "examples/python/torchscript_example.py": ["saved tagger.pt and inputs.pt"],
    "examples/python/aoti_example.py": ["packaged tagger.pt2 - runs at other sizes: (3, 50, 5)"],
    "examples/python/compile_export_example.py": [
        "compiled graphs: 1",
        "exported program matches eager: (3, 50, 5)",
    ],
    "examples/python/autocast_example.py": [
        "output torch.bfloat16 (5, 3, 40)",
        "weight_ih_l0.grad torch.float32",
    ],
    "examples/python/ddp_example.py": [
        "rank 0: step 3 loss",
        "parameters identical on both ranks: True",
    ],
}
EXAMPLES = [
    *PYTHON_EXAMPLES,
    "examples/cpp/lstm_example.cpp",
    "examples/cpp/packed_example.cpp",
    "examples/cpp/layers_example.cpp",
    "tests/consumer/CMakeLists.txt",
]


def quoted_examples():
    """{path: text} of every block between the README's example markers."""
    pattern = re.compile(
        r"<!-- example: (?P<path>\S+) -->\n```\w*\n(?P<text>.*?)```\n"
        r"<!-- end example -->",
        re.DOTALL,
    )
    return {m["path"]: m["text"] for m in pattern.finditer(README.read_text())}


@pytest.mark.parametrize("path", EXAMPLES)
def test_readme_quotes_example_verbatim(path):
    quoted = quoted_examples()
    assert path in quoted, f"README.md has no example block for {path}"
    assert quoted[path] == (ROOT / path).read_text(), (
        f"README.md's copy of {path} differs from the file; paste the file "
        "between the markers again"
    )


def run_example(path, cwd):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, str(ROOT / path)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# The README's shell lines: deeprnn-run on what an example saved.
CLI_EXAMPLES = {
    "examples/python/torchscript_example.py": ("tagger.pt", "output: Tensor float32 [2, 7, 5]"),
    "examples/python/aoti_example.py": ("tagger.pt2", "output[0]: Tensor float32 [3, 50, 5]"),
}


@pytest.mark.parametrize("path", [p for p in PYTHON_EXAMPLES if p not in CLI_EXAMPLES])
def test_python_example_runs(path, tmp_path):
    result = run_example(path, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in PYTHON_EXAMPLES[path]:
        assert line in result.stdout, result.stdout


@pytest.mark.parametrize("path", list(CLI_EXAMPLES))
def test_example_model_runs_in_deeprnn_run(path, tmp_path):
    result = run_example(path, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in PYTHON_EXAMPLES[path]:
        assert line in result.stdout, result.stdout
    build_dir = pathlib.Path(os.environ.get("DEEPRNN_BUILD_DIR", "build"))
    cli = (build_dir if build_dir.is_absolute() else ROOT / build_dir) / "deeprnn-run"
    assert cli.is_file(), f"{cli} is not built (scripts/setup.sh builds it)"
    model, printed = CLI_EXAMPLES[path]
    run = subprocess.run([str(cli), model, "inputs.pt", "--output", "out.pt"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert printed in run.stdout, run.stdout
    got = torch.load(tmp_path / "out.pt")
    got = got[0] if isinstance(got, tuple) else got  # a package returns a flat tuple
    torch.testing.assert_close(got, torch.load(tmp_path / "expected.pt"))
