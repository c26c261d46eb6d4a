"""Register qkrag's Chroma embedding function with Chroma when `import qkrag` runs, without importing chromadb.

Chroma rebuilds a collection's embedding function from its configuration by looking the function's name up in a
registry (`chromadb.utils.embedding_functions.known_embedding_functions`), filled by classes that were imported.
Importing chromadb costs about a second, so `import qkrag` does not: when chromadb is already imported it registers
at once; otherwise it leaves a post-import hook on `sys.meta_path` that registers right after chromadb's registry
module has loaded. Either way, a script that runs `import qkrag` (before or after `import chromadb`) can reopen a
collection `qkrag index` built and query it by text. Nothing here imports numpy, torch or chromadb.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

TARGET = "chromadb.utils.embedding_functions"


def register() -> None:
    from qkrag.integrations.chroma import embedding_function_class

    embedding_function_class()


class ChromaRegistryHook(importlib.abc.MetaPathFinder):
    """Finds chromadb's registry module with the normal finder and registers qkrag's function once it has run."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 - importlib's signature
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001
            run(module)
            uninstall()
            try:
                register()
            except Exception as err:  # noqa: BLE001 - never break the user's `import chromadb`
                import warnings

                warnings.warn(f"qkrag could not register its Chroma embedding function ({err})", stacklevel=2)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  (this loader instance only)
        return spec


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, ChromaRegistryHook)]


def install() -> None:
    """Register now if chromadb's registry is loaded, else hook its import. Never fails `import qkrag`: without
    chromadb installed there is nothing to register with."""
    if TARGET in sys.modules:
        try:
            register()
        except Exception:  # noqa: BLE001 - an unsupported chromadb must not break `import qkrag`
            pass
        return
    if not any(isinstance(f, ChromaRegistryHook) for f in sys.meta_path):
        sys.meta_path.insert(0, ChromaRegistryHook())
