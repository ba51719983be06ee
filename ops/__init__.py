"""deeprnn: deep recurrent networks (RNN, GRU, LSTM) as PyTorch operators.

Importing the package loads the compiled library ``libdeeprnn.so``, which
registers the operators under ``torch.ops.deeprnn`` (``lstm``, ``gru``,
``rnn_tanh``, ``rnn_relu``, ``_rnn_forward``, ``_rnn_backward``,
``reserve_size``). The library is looked up in this order:

1. the path in the environment variable ``DEEPRNN_LIBRARY``, if set;
2. ``libdeeprnn.so`` next to this file (where ``setup.py`` puts it).

``deeprnn.RNN``, ``deeprnn.GRU`` and ``deeprnn.LSTM`` are drop-ins for their
``torch.nn`` namesakes; ``deeprnn.functional`` holds typed wrappers over the
operators.
"""

import os

import torch

__version__ = "0.1.0"

_LIBRARY_NAME = "libdeeprnn.so"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _built_for_torch():
    """The torch version the packaged library was built against, or None."""
    try:
        from . import _build_info
    except ImportError:
        return None
    return getattr(_build_info, "TORCH_VERSION", None)


def _ops_registered() -> bool:
    # A second copy of the library would register the namespace twice, which
    # aborts the process; so a library that is already in (loaded by hand, or
    # linked into the program) is used as it is.
    try:
        torch.ops.deeprnn.lstm
    except (AttributeError, RuntimeError):
        return False
    return True


def _load_library() -> str:
    from_env = os.environ.get("DEEPRNN_LIBRARY")
    if from_env:
        path = os.path.abspath(os.path.expanduser(from_env))
        where = f"{path} (from the environment variable DEEPRNN_LIBRARY)"
        built_for = None
    else:
        path = os.path.join(_PACKAGE_DIR, _LIBRARY_NAME)
        where = f"{path} (next to the deeprnn package)"
        built_for = _built_for_torch()

    if _ops_registered():
        return path

    if not os.path.isfile(path):
        raise ImportError(
            f"deeprnn: the compiled library was not found at {where}. "
            "Build it with scripts/setup.sh, or install the package with "
            "`pip install .` from the repository root; or point the "
            "environment variable DEEPRNN_LIBRARY at a built libdeeprnn.so."
        )

    if built_for is not None and built_for != torch.__version__:
        raise ImportError(
            f"deeprnn: {path} was built for torch {built_for}, but this "
            f"Python runs torch {torch.__version__}. Rebuild deeprnn against "
            "this torch (scripts/setup.sh or `pip install .`)."
        )

    try:
        torch.ops.load_library(path)
    except OSError as error:
        # torch wraps the loader's message (undefined symbol ...) as the cause.
        detail = str(error)
        if error.__cause__ is not None and str(error.__cause__) not in detail:
            detail = f"{detail} ({error.__cause__})"
        if built_for is not None:
            versions = (
                f"it was built for torch {built_for}; this Python runs "
                f"torch {torch.__version__}"
            )
        else:
            versions = (
                "it may have been built for another torch than the torch "
                f"{torch.__version__} this Python runs"
            )
        hint = ""
        if "undefined symbol" in detail:
            hint = " (undefined symbols usually mean a torch version mismatch)"
        raise ImportError(
            f"deeprnn: could not load {where}: {detail}{hint}; {versions}. "
            "Rebuild deeprnn against this torch (scripts/setup.sh or "
            "`pip install .`)."
        ) from error
    return path


_library_path = _load_library()

from . import functional  # noqa: E402
from .modules import GRU, LSTM, RNN  # noqa: E402

__all__ = ["RNN", "GRU", "LSTM", "functional", "__version__"]
