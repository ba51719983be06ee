"""scripts/bench.py on the CPU: one small row end to end (agreement check,
timings, JSON, table), and its refusals of what only a GPU can run.

The timings themselves are not asserted (speed is measured, not tested);
what is checked is that the script measures what it says: both sides, the
requested rows, modes and dtypes, positive medians and their ratio."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench.py"


def _run(*args, tmp_path):
    env = dict(os.environ)
    import deeprnn

    env["DEEPRNN_LIBRARY"] = deeprnn._library_path
    return subprocess.run(
        [sys.executable, str(BENCH), *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600)


def test_one_row_two_dtypes_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    done = _run("--rows", "long", "--modes", "rnn_tanh,gru",
                "--dtype", "float32,float64", "--repeats", "2",
                "--warmup", "0", "--threads", "1", "--json", str(out),
                "--png", "", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    results = report["results"]
    # 2 dtypes x 2 modes x 2 passes, each with both sides timed twice.
    assert len(results) == 8
    assert {(r["dtype"], r["mode"], r["pass"]) for r in results} == {
        (d, m, p) for d in ("float32", "float64")
        for m in ("rnn_tanh", "gru") for p in ("inference", "training")}
    for r in results:
        assert r["row"] == "long"
        for side in ("torch.nn", "deeprnn"):
            assert len(r["times_ms"][side]) == 2
            assert all(t > 0 for t in r["times_ms"][side])
        assert r["ratio"] == pytest.approx(
            r["median_ms"]["torch.nn"] / r["median_ms"]["deeprnn"])
        # The agreement check ran before the timing, and passed.
        assert r["check"]
    assert report["config"]["dtypes"] == ["float32", "float64"]
    assert report["config"]["timing"] == "time.perf_counter"
    assert report["config"]["tf32"] is None  # a CUDA setting
    # The markdown table comes last, with a dtype column for two dtypes.
    table = done.stdout[done.stdout.index("| row | dtype | mode |"):]
    assert len(table.strip().splitlines()) == 2 + 8
    assert "| long | float64 | gru | training |" in table


@pytest.mark.parametrize("args,message", [
    (["--rows", "large"], "GPU-only rows"),
    (["--tf32", "on"], "TF32 is a CUDA setting"),
    (["--dtype", "float16"], "unknown dtype float16"),
])
def test_refuses_what_the_cpu_cannot_run(args, message, tmp_path):
    done = _run(*args, "--json", "", "--png", "", tmp_path=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_default_rows_follow_the_device():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cpu, cuda = bench.default_rows("cpu"), bench.default_rows("cuda")
    assert "large" not in cpu and "large" in cuda
    assert cuda == cpu + ["large"]
    assert cpu == ["fastrnns", "stacked-bi", "deep", "small-batch", "long", "decode"]
    assert bench.ROWS["large"].describe() == (
        "T=256 B=128 I=1024 H=1024 L=2 bidirectional, GPU only")
