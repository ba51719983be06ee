"""The README's examples are real files, quoted verbatim, and they run.

The C++ example (examples/cpp/lstm_example.cpp) is built by CMake and run by
ctest (examples.lstm_example); here we check that the README quotes it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLES = ["examples/python/lstm_example.py", "examples/cpp/lstm_example.cpp"]


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


def test_python_example_runs():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples/python/lstm_example.py")],
        cwd=ROOT / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "output (5, 3, 40)" in result.stdout
    assert "h_n (4, 3, 20) c_n (4, 3, 20)" in result.stdout
    assert "match torch.nn.LSTM" in result.stdout
