"""Builds portero, compiling the router (the data plane) to C with mypyc.

Why compile: the router is typed Python on asyncio.Protocol + httptools + uvloop, and every request runs through
it. mypyc compiles that same source (no second implementation to keep in step) into a C extension that does the
router's per-request Python work in less than half the time (docs/benchmarks.md). Everything else stays Python.

`PORTERO_COMPILE=0` builds nothing: the router then runs as plain Python, with the same behaviour, slower.
The Makefile compiles in place (`build_ext --inplace`); `src/portero/router/__init__.py` refuses to import a
compiled module older than its source.
"""

import os
from pathlib import Path

from setuptools import Extension, setup

ROUTER = sorted(str(path) for path in Path("src/portero/router").glob("*.py") if path.name != "__init__.py")


def compiled() -> list[Extension]:
    if os.environ.get("PORTERO_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify  # a build-time dependency only (mypy is pinned in requirements.lock)

    return mypycify(ROUTER, opt_level="3", group_name="portero_router")


setup(ext_modules=compiled())
