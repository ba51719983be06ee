"""The CPU kernels' buffer cache (csrc/cpu/buffer_cache.h).

A training forward's reserve, backward's chunk buffers, a layer's output
between layers and the packed weights come from a cache that keeps freed
blocks of 256 KiB and more (up to a cap on idle bytes) and hands them to the
next request of about the same size. These tests check the reuse through the
private operators ``_cpu_buffer_cache_stats`` ([idle bytes, idle blocks,
bytes in use, reuses]) and ``_cpu_buffer_cache_bytes`` (the cap), that a
reused block's old contents never reach a result (the block filled with NaN
first), the cap, the environment variable, frees from other threads, and the
arguments' errors. Parity with every buffer handed out as NaNs is in
test_parity.py and test_lengths.py (``poisoned_buffers``).
"""

import math
import os
import subprocess
import sys
import threading

import pytest
import torch

import deeprnn
from deeprnn_test_utils import python_with_variable

cache_bytes = torch.ops.deeprnn._cpu_buffer_cache_bytes
cache_stats = torch.ops.deeprnn._cpu_buffer_cache_stats

# A reserve of several MiB: far above the cache's 256 KiB floor.
SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE = 40, 16, 24, 64


@pytest.fixture
def cache():
    """An empty cache with the default cap, restored after the test."""
    previous = cache_bytes(0)
    cache_bytes(256 << 20)
    yield
    cache_bytes(previous)


def _reference(mode="LSTM", dtype=torch.float32):
    torch.manual_seed(4242)
    cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}[mode]
    return cls(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True, dtype=dtype)


def _forward(reference, x, train=True):
    """torch.ops.deeprnn on the reference module's own flat weights."""
    params = list(reference._flat_weights)
    if isinstance(reference, torch.nn.LSTM):
        return torch.ops.deeprnn.lstm(x, None, None, params, True, reference.num_layers,
                                      0.0, train, True, False, None)
    op = torch.ops.deeprnn.gru if isinstance(reference, torch.nn.GRU) else \
        torch.ops.deeprnn.rnn_tanh
    return op(x, None, params, True, reference.num_layers, 0.0, train, True, False, None)


def _private_forward(reference, x):
    """The private training forward, which returns its reserve."""
    mode = {torch.nn.LSTM: "lstm", torch.nn.GRU: "gru"}.get(type(reference), "rnn_tanh")
    return torch.ops.deeprnn._rnn_forward(
        x, None, None, list(reference._flat_weights), True, reference.num_layers, 0.0,
        True, True, False, mode, True, None)


def test_a_freed_reserve_serves_the_next_call(cache):
    reference = _reference()
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE)
    reserve = _private_forward(reference, x)[3]
    assert reserve.numel() * reserve.element_size() >= 1 << 20
    address = reserve.data_ptr()
    in_use = cache_stats()[2]
    assert in_use >= reserve.numel() * reserve.element_size()
    del reserve
    idle, blocks, _, reuses = cache_stats()
    assert idle >= 1 << 20 and blocks >= 1

    again = _private_forward(reference, torch.randn(SEQ_LEN, BATCH, INPUT_SIZE))[3]
    assert again.data_ptr() == address
    assert cache_stats()[3] > reuses


def test_a_reused_block_never_leaks_its_old_contents(cache):
    """The block a training step's reserve comes from is first filled with
    NaN: that step, forward and backward, must match torch.nn exactly as
    with fresh memory."""
    for mode in ("LSTM", "GRU", "RNN"):
        reference = _reference(mode)
        reserve = _private_forward(reference, torch.randn(SEQ_LEN, BATCH, INPUT_SIZE))[3]
        reserve.fill_(math.nan)
        size = reserve.numel() * reserve.element_size()
        del reserve
        idle, _, _, reuses = cache_stats()

        x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, requires_grad=True)
        ours = _forward(reference, x)
        # The step's forward took that block (its graph keeps it).
        assert cache_stats()[0] <= idle - size and cache_stats()[3] > reuses, mode
        expected = reference(x)
        torch.testing.assert_close(ours[0], expected[0], rtol=1e-5, atol=1e-5)
        weight = torch.randn_like(expected[0])
        params = list(reference._flat_weights)
        got = torch.autograd.grad((ours[0] * weight).sum(), [x] + params)
        want = torch.autograd.grad((expected[0] * weight).sum(), [x] + params)
        for name, g, w in zip(["input"] + reference._flat_weights_names, got, want):
            assert torch.isfinite(g).all(), name
            # A weight gradient sums T * B = 640 products: float32 rounding
            # (either side's, in whichever order its BLAS sums) reaches about
            # 1e-6 of the gradient's largest entry, so atol scales with it.
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * w.abs().max().item(),
                                       msg=lambda m: f"{mode} grad of {name}: {m}")
        del ours, got
        cache_bytes(0)  # the next mode starts from an empty cache
        cache_bytes(256 << 20)


def test_a_block_serves_requests_of_about_its_size_only(cache):
    reference = _reference()
    reserve = _private_forward(reference, torch.randn(SEQ_LEN, BATCH, INPUT_SIZE))[3]
    address = reserve.data_ptr()
    del reserve
    # Twice the steps: the idle block is too small, a fresh one comes.
    longer = _private_forward(reference, torch.randn(2 * SEQ_LEN, BATCH, INPUT_SIZE))[3]
    assert longer.data_ptr() != address
    longer_address = longer.data_ptr()
    del longer
    # Half the steps: either idle block would be at least twice the request,
    # so a fresh one comes.
    shorter = _private_forward(reference, torch.randn(SEQ_LEN // 2, BATCH, INPUT_SIZE))[3]
    assert shorter.data_ptr() not in (address, longer_address)
    del shorter
    # A tenth fewer steps fits the first block.
    close = _private_forward(reference, torch.randn(SEQ_LEN - 4, BATCH, INPUT_SIZE))[3]
    assert close.data_ptr() == address


def test_the_cap_bounds_the_idle_bytes(cache):
    reference = _reference()
    reserves = [_private_forward(reference, torch.randn(SEQ_LEN, BATCH, INPUT_SIZE))[3]
                for _ in range(3)]
    size = reserves[0].numel() * reserves[0].element_size()
    cap = 2 * size + (size // 2)
    assert cache_bytes(cap) == 256 << 20
    del reserves
    idle, blocks, _, _ = cache_stats()
    assert 0 < idle <= cap
    # A smaller cap frees idle blocks at once; 0 frees all and caches nothing.
    cache_bytes(1)
    assert cache_stats()[:2] == [0, 0]
    cache_bytes(0)
    reserve = _private_forward(reference, torch.randn(SEQ_LEN, BATCH, INPUT_SIZE))[3]
    in_use = cache_stats()[2]
    del reserve
    assert cache_stats()[:2] == [0, 0]
    assert in_use == 0  # with no cache, nothing is counted as in use


def test_blocks_freed_on_other_threads(cache):
    """Tensors die on whichever thread drops them: calls on four threads at
    once, each freeing its own and another's results, give what one thread
    gives."""
    reference = _reference("GRU")
    inputs = [torch.randn(SEQ_LEN, BATCH, INPUT_SIZE) for _ in range(4)]
    with torch.no_grad():
        expected = [_forward(reference, x, train=False)[0] for x in inputs]
    results = [None] * 4
    errors = []

    def work(index):
        try:
            for _ in range(5):
                outputs = _private_forward(reference, inputs[index])
                results[index] = outputs[0].detach().clone()
                del outputs
        except Exception as error:  # reported below, not lost with the thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert cache_stats()[2] == 0


def test_the_profiler_sees_the_reserve(cache):
    """torch.profiler's memory profiling counts what comes from the cache,
    as it counts torch's own CPU allocations."""
    reference = _reference()
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as profiler:
        outputs = _private_forward(reference, x)
    sizes = [t.numel() * t.element_size() for t in outputs]
    events = [e for e in profiler.key_averages() if e.key == "deeprnn::_rnn_forward"]
    assert events, [e.key for e in profiler.key_averages()]
    # The op's allocations that outlive it are its results, the reserve's
    # block rounded up to 64 KiB.
    assert sum(sizes) <= events[0].cpu_memory_usage < sum(sizes) + (64 << 10)


def test_arguments_are_checked():
    with pytest.raises(RuntimeError, match=r"deeprnn\._cpu_buffer_cache_bytes: bytes must "
                       r"be -1 \(query\), 0 \(no cache\) or a positive cap on idle bytes, "
                       r"got -2"):
        cache_bytes(-2)
    with pytest.raises(RuntimeError, match=r"deeprnn\._cpu_buffer_cache_poison: enable must "
                       r"be -1 \(query\), 0 \(off\) or 1 \(on\), got 2"):
        torch.ops.deeprnn._cpu_buffer_cache_poison(2)


@pytest.mark.parametrize("value, expected", [(None, 256 << 20), ("", 256 << 20),
                                             ("0", 0), ("64", 64 << 20),
                                             ("lots", 256 << 20)])
def test_environment_variable_sets_the_cap(value, expected):
    result = python_with_variable(
        "import deeprnn, torch; print(torch.ops.deeprnn._cpu_buffer_cache_bytes())",
        "DEEPRNN_CPU_BUFFER_CACHE_MB", value)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == expected
    if value == "lots":
        assert ("DEEPRNN_CPU_BUFFER_CACHE_MB must be a whole number of MiB (0 turns the "
                "cache off), got 'lots': it stays 256 MiB") in result.stderr


def _child_training_step(queue):
    # As a DataLoader worker does: GNU OpenMP's thread pool does not survive
    # a fork (torch.nn's own GRU hangs in such a child on two threads).
    torch.set_num_threads(1)
    reference = _reference("GRU")
    torch.manual_seed(7)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, requires_grad=True)
    output = _forward(reference, x)[0]
    # Plain floats: a tensor would go through shared memory the exiting
    # child takes with it.
    queue.put(torch.autograd.grad(output.sum(), x)[0].flatten().tolist())


def test_a_forked_child_uses_the_cache(cache):
    """A child forked with idle blocks in the cache (a DataLoader worker,
    say) gets a working copy of it: its training step matches the parent's."""
    import multiprocessing

    reference = _reference("GRU")
    _private_forward(reference, torch.randn(SEQ_LEN, BATCH, INPUT_SIZE))
    assert cache_stats()[1] >= 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child's thread count, for the same sums
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_training_step, args=(queue,))
    child.start()
    got = torch.tensor(queue.get(timeout=60)).view(SEQ_LEN, BATCH, INPUT_SIZE)
    child.join(timeout=60)
    assert child.exitcode == 0
    torch.manual_seed(7)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, requires_grad=True)
    try:
        expected = torch.autograd.grad(_forward(reference, x)[0].sum(), x)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got, expected)


_OUT_OF_MEMORY_CHILD = """
import resource, sys, torch, deeprnn
torch.set_num_threads(1)
torch.ops.deeprnn._cpu_buffer_cache_bytes(1 << 30)
batch, steps = 1 << 19, 16
params = [torch.randn(3, 1), torch.randn(3, 1), torch.randn(3), torch.randn(3)]

def call(x):  # a GRU with H = 1: a reserve of 4 T B floats, little arithmetic
    return torch.ops.deeprnn._rnn_forward(
        x, None, None, params, True, 1, 0.0, True, False, False, "gru", True, None)

first = call(torch.randn(steps, batch, 1))
size = first[3].numel() * 4  # 128 MiB
held = first[3] if sys.argv[1] == "held" else None
del first
x = torch.randn(2 * steps, batch, 1)
# Room for the next call's reserve (2 x size) and output, less 48 MiB: it
# fits only if the first reserve's idle block (size) is given back.
status = open("/proc/self/status").read().split("VmSize:")[1].split()[0]
limit = int(status) * 1024 + 2 * size + x.numel() * 4 - (48 << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    second = call(x)
    print("RAN", torch.ops.deeprnn._cpu_buffer_cache_stats()[0] < size)
except RuntimeError as error:
    print("FAILED", str(error).splitlines()[0])
"""


@pytest.mark.parametrize("first_reserve", ["freed", "held"])
def test_idle_blocks_are_freed_when_memory_runs_out(first_reserve):
    """A request the system cannot serve frees the idle blocks and tries
    again: under an address-space limit, a call fits once the previous
    call's idle reserve is given back (and, the control, does not fit while
    that reserve is still held)."""
    env = dict(os.environ, DEEPRNN_LIBRARY=os.path.abspath(deeprnn._library_path))
    result = subprocess.run([sys.executable, "-c", _OUT_OF_MEMORY_CHILD, first_reserve],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    if first_reserve == "freed":
        assert result.stdout.strip() == "RAN True", result.stdout + result.stderr
    else:
        assert result.stdout.startswith("FAILED"), result.stdout + result.stderr
        assert "not enough memory" in result.stdout or \
            "can't allocate memory" in result.stdout, result.stdout
