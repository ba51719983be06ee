"""One deeprnn module shared by 8 Python threads that run forward, and
forward plus backward on their own graphs, at the same time: each thread's
results are bitwise those of a serial run on the same input.

Each thread gets a different input, so a buffer or cache shared by mistake
between concurrent calls shows up as another thread's numbers. Gradients
come from torch.autograd.grad, so nothing accumulates in the shared
parameters' .grad (whose summation order would depend on the interleaving).
"""

import threading

import pytest
import torch

from deeprnn_test_utils import MODES, call, make_pair, random_states

THREADS, ROUNDS = 8, 3
SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE, LAYERS = 12, 3, 5, 7, 2


@pytest.fixture
def one_intra_op_thread():
    # With several intra-op threads per call, the GEMMs' summation order
    # depends on how many threads each call gets while 8 callers compete;
    # one per call makes bitwise equality with the serial run a fair demand.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _run(module, mode, x, h0, c0, with_backward):
    if not with_backward:
        with torch.no_grad():
            return call(module, mode, x, h0, c0)
    leaves = [t.detach().requires_grad_() for t in (x, h0, c0) if t is not None]
    states = leaves[1:] + [None]
    results = call(module, mode, leaves[0], states[0], states[1])
    # Distinct weights so every element of every result reaches every gradient.
    loss = results[0].pow(2).sum()
    for i, result in enumerate(results[1:], start=2):
        loss = loss + i * result.sin().sum()
    grads = torch.autograd.grad(loss, leaves + list(module.parameters()))
    return [r.detach() for r in results] + list(grads)


@pytest.mark.parametrize("with_backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
def test_concurrent_calls_on_a_shared_module_equal_serial_calls(
        mode, dtype, with_backward, one_intra_op_thread):
    torch.manual_seed(0)
    _, module = make_pair(mode, dtype=dtype, input_size=INPUT_SIZE,
                          hidden_size=HIDDEN_SIZE, num_layers=LAYERS,
                          bidirectional=True)
    inputs = []
    for _ in range(THREADS):
        x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, dtype=dtype)
        h0, c0 = random_states(mode, BATCH, LAYERS, True, HIDDEN_SIZE, 0, dtype)
        inputs.append((x, h0, c0))
    serial = [_run(module, mode, *args, with_backward) for args in inputs]

    concurrent = [[] for _ in range(THREADS)]
    errors = [None] * THREADS
    barrier = threading.Barrier(THREADS)

    def work(i):
        try:
            # A new thread starts with torch's default intra-op setting (and
            # MKL's thread count is per thread).
            torch.set_num_threads(1)
            barrier.wait()
            for _ in range(ROUNDS):
                concurrent[i].append(_run(module, mode, *inputs[i], with_backward))
        except BaseException as error:  # reported below, in the test's thread
            errors[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for i in range(THREADS):
        assert errors[i] is None, f"thread {i}: {errors[i]!r}"
        assert len(concurrent[i]) == ROUNDS
        for round_results in concurrent[i]:
            assert len(round_results) == len(serial[i])
            for k, (got, expected) in enumerate(zip(round_results, serial[i])):
                assert torch.equal(got, expected), (
                    f"thread {i}, result {k}: max |diff| "
                    f"{(got - expected).abs().max().item()}")
