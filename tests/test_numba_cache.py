"""The numba backend's on-disk cache goes stale with any source its kernels depend on.

Numba checks only the file that defines a cached function; a kernel's cached machine code also
holds the helpers it calls from other files (noise, vmath) and the contract constants it was
compiled with, so the backend stamps every cache with a digest of all of them.
"""

import importlib
import pkgutil

import pytest

pytest.importorskip("numba")

from numba.core.caching import IndexDataCacheFile  # noqa: E402

from scorefast.kernels import numba as numba_backend  # noqa: E402
from scorefast.kernels.numba import noise  # noqa: E402


def _kernel_dispatchers():
    from numba.core.dispatcher import Dispatcher

    for info in pkgutil.iter_modules(numba_backend.__path__):
        module = importlib.import_module(f"{numba_backend.__name__}.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, Dispatcher) and value.py_func.__module__ == module.__name__:
                yield f"{info.name}.{name}", value


def test_kernel_sources_cover_the_backend_and_the_contracts():
    names = {(path.parent.name, path.name) for path in noise.kernel_sources()}
    for module in ("noise.py", "vmath.py", "chain.py", "gmm_blocks.py", "langevin.py"):
        assert ("numba", module) in names
    assert ("ops", "noise.py") in names and ("ops", "chain.py") in names


def test_digest_changes_with_any_byte_of_any_source(tmp_path):
    files = [tmp_path / "a.py", tmp_path / "b.py"]
    files[0].write_text("x = 1\n")
    files[1].write_text("y = 2\n")
    before = noise.digest(files)
    assert noise.digest(files) == before
    files[1].write_text("y = 3\n")
    assert noise.digest(files) != before
    files[1].write_text("y = 2\n")
    assert noise.digest(files) == before
    (tmp_path / "c.py").write_text("x = 1\n")  # same contents under another name
    assert noise.digest([tmp_path / "c.py", files[1]]) != before


@pytest.mark.skipif(not noise._CACHE, reason="SCOREFAST_NUMBA_CACHE=0: the kernels are not cached")
def test_every_cached_kernel_carries_the_sources_digest():
    dispatchers = dict(_kernel_dispatchers())
    assert len(dispatchers) > 20  # the backend's kernels and helpers were found
    for name, dispatcher in dispatchers.items():
        stamp = dispatcher._cache._cache_file._source_stamp
        assert isinstance(stamp, tuple) and stamp[1] == noise.sources_digest(), name


def test_an_index_saved_under_other_sources_is_not_loaded(tmp_path):
    # The mechanism the stamp relies on, on the installed numba: the index keeps the stamp it
    # was saved with, and a load under another stamp finds nothing.
    own = b"numba's own stamp of the defining file"
    saved = IndexDataCacheFile(str(tmp_path), "kernel-1.py311", (own, "digest before"))
    saved.save(("signature", "target"), {"code": 1})
    same = IndexDataCacheFile(str(tmp_path), "kernel-1.py311", (own, "digest before"))
    assert same.load(("signature", "target")) == {"code": 1}
    changed = IndexDataCacheFile(str(tmp_path), "kernel-1.py311", (own, "digest after"))
    assert changed.load(("signature", "target")) is None
