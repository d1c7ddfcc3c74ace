"""Unpickling files a run reads from disk without letting them run code.

A pickle names the callables that rebuild its objects (``GLOBAL module name``); a crafted one names
``os.system``. ``loads``/``load`` rebuild only objects whose globals are on an allow-list and refuse
any other with ``UnsafePickleError`` naming the file and the global, before anything is called.
Used for the CIFAR-10 batches of ``env.data_dir`` (numpy arrays, lists, strings) and for the
MinAtar game objects inside a checkpoint; checkpoints themselves load with torch's
``weights_only=True`` (``checkpoint.py``).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable
from typing import Any, BinaryIO

# numpy arrays, dtypes and scalars (numpy 2 names its core ``numpy._core``; older pickles say ``numpy.core``)
NUMPY_ARRAYS = frozenset(
    (core, name) for core in ("numpy._core.multiarray", "numpy.core.multiarray") for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype")}

# numpy's legacy RandomState (MT19937), as MinAtar's games hold them
NUMPY_RANDOM_STATE = frozenset(
    {
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random.mtrand", "RandomState"),
        ("numpy.random._mt19937", "MT19937"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list (it could run code when loaded)."""

    def __init__(self, where: Any, global_name: str):
        self.where, self.global_name = str(where), global_name
        super().__init__(
            f"{where} was refused: it needs {global_name}, which is not among the types this file may hold "
            "(loading it could run code). Only load files from a source you trust; regenerate this one"
        )


class _Restricted(pickle.Unpickler):
    def __init__(self, file: BinaryIO, allowed: frozenset[tuple[str, str]], where: Any, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.allowed, self.where = allowed, where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        raise UnsafePickleError(self.where, f"{module}.{name}")


def load(file: BinaryIO, allowed: Iterable[tuple[str, str]], where: Any, **kwargs: Any) -> Any:
    """``pickle.load(file)`` allowing only the globals ``allowed`` (``(module, name)`` pairs);
    ``UnsafePickleError`` naming ``where`` and the global otherwise, before anything is called.
    ``kwargs`` go to ``pickle.Unpickler`` (e.g. ``encoding``)."""
    return _Restricted(file, frozenset(allowed), where, **kwargs).load()


def loads(data: bytes, allowed: Iterable[tuple[str, str]], where: Any, **kwargs: Any) -> Any:
    """``load`` of a bytes object."""
    return load(io.BytesIO(data), allowed, where, **kwargs)
