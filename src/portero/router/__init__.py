"""The router: portero's own HTTP load balancer (data plane).

Its modules are compiled to C by mypyc when portero is built (setup.py, `make setup`). A compiled module older
than its source would run the old code, so importing the router then fails, and says how to rebuild.
"""

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path


def _refuse_stale_builds() -> None:
    here = Path(__file__).parent
    for source in here.glob("*.py"):
        for suffix in EXTENSION_SUFFIXES:
            built = source.with_name(source.stem + suffix)
            if built.exists() and built.stat().st_mtime < source.stat().st_mtime:
                raise ImportError(
                    f"{built.name} was compiled before {source.name} last changed: run `make setup` to compile "
                    f"the router again (or `make pure` to run it as plain Python)"
                )


_refuse_stale_builds()
