"""Differential fuzzing: deeprnn against torch.nn on random configurations.

Each configuration (see fuzz_configs.draw_config) picks a mode, layers,
directions, batch_first, bias, LSTM projection, sizes, dtype, the memory
layout of the input, states, parameters and output gradients, train/eval,
which results the loss reads, the module or the operator path, and for about
a third of them variable lengths (torch.nn then runs on a PackedSequence,
sometimes with NaN/inf in the padding). Outputs,
final states and every gradient (input, h0, c0, each parameter) under random
output-gradient weights are compared with torch.nn's under the same weights.

The CI run is DEFAULT_COUNT configurations from a fixed seed; a longer run:

    DEEPRNN_FUZZ_CONFIGS=5000 DEEPRNN_FUZZ_SEED=7 python -m pytest tests/python/test_fuzz.py

A failing configuration prints a snippet that reruns it alone. Every
configuration runs with the CPU's buffer cache handing out buffers filled
with NaNs (``poisoned_buffers``, conftest.py): what a kernel reads before
writing it shows as a mismatch.
"""

import pytest
import torch

import fuzz_configs

CONFIGS = fuzz_configs.configs()


@pytest.mark.parametrize("config", CONFIGS, ids=[fuzz_configs.config_id(c) for c in CONFIGS])
def test_matches_torch_nn(poisoned_buffers, config):
    failure = None
    try:
        fuzz_configs.check_config(config)
    except Exception as error:  # a mismatch, or deeprnn raising where torch.nn did not
        failure = f"{type(error).__name__}: {error}"
    if failure is not None:  # outside `except`: no chained traceback before the snippet
        pytest.fail(
            f"{failure}\n\nReproduce with:\n\n{fuzz_configs.reproducer(config)}\n",
            pytrace=False,
        )


def test_every_feature_is_drawn():
    """The generator keeps covering what it is meant to cover (a change to
    draw_config that silently dropped a feature would fail here). Checked on
    the CI draw itself when it is the default one, else on its own draw."""
    sample = CONFIGS if len(CONFIGS) >= fuzz_configs.DEFAULT_COUNT else fuzz_configs.configs(
        fuzz_configs.DEFAULT_COUNT)
    counts = fuzz_configs.feature_counts(sample)
    missing = {name: n for name, n in counts.items() if n < 5}
    assert not missing, f"rarely drawn features: {missing}\n{fuzz_configs.coverage_table(sample)}"


def _reproducer_configs():
    """The first configuration, and the first with lengths and NaN/inf padding
    (from the CI draw, or a default draw when a custom one has none)."""
    def poisoned(c):
        return c["lengths"] is not None and c["pad_poison"] is not None

    with_lengths = next((c for c in CONFIGS if poisoned(c)), None) or next(
        c for c in fuzz_configs.configs(fuzz_configs.DEFAULT_COUNT, fuzz_configs.DEFAULT_SEED)
        if poisoned(c))
    return [CONFIGS[0], with_lengths]


@pytest.mark.parametrize("config", _reproducer_configs(), ids=["first", "lengths"])
def test_reproducer_rebuilds_the_same_case(poisoned_buffers, config):
    """The printed snippet is only useful if the dict alone rebuilds the case
    (and sets up the buffer cache as the fuzz test does; the fixture restores
    it)."""
    namespace = {}
    snippet = fuzz_configs.reproducer(config)
    torch.ops.deeprnn._cpu_buffer_cache_poison(0)
    exec(compile(snippet.split("reference, ours, case")[0], "<reproducer>", "exec"), namespace)
    assert torch.ops.deeprnn._cpu_buffer_cache_poison() == 1
    assert namespace["config"] == config
    first = fuzz_configs.build_case(config)
    second = fuzz_configs.build_case(namespace["config"])
    for a, b in zip(first[:2], second[:2]):
        for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            assert torch.equal(p, q), name
    for key in ("x", "h0", "c0", "lengths"):
        a, b = first[2][key], second[2][key]
        assert (a is None) == (b is None)
        if a is not None:
            # equal_nan: the padding of x may hold NaN on purpose.
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=key)
            assert a.stride() == b.stride(), key
    for a, b in zip(first[2]["grads"], second[2]["grads"]):
        assert torch.equal(a, b) and a.stride() == b.stride(), "grads"
