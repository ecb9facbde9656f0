"""The declared environment is the true one: the conda description and pyproject.toml list the
same packages with the same bounds, one Python floor holds everywhere, and every third-party
module the kit imports comes from a declared distribution."""

import ast
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

from paperlib.provenance import requirement_name

ROOT = Path(__file__).resolve().parent.parent
#: Folders whose Python files (and notebooks' code cells) are scanned for imports.
SOURCES = ["paperlib", "tests", "benchmarks", "notebooks"]


def _split(spec: str) -> tuple[str, str]:
    name = re.match(r"^[A-Za-z0-9_.\-]+", spec).group(0)
    return _normal(name), spec[len(name):].replace(" ", "")


#: A distribution name as PEP 503 compares them (``PyYAML`` = ``pyyaml``): the kit's own rule.
_normal = requirement_name


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _declared() -> dict[str, str]:
    project = _project()["project"]
    return dict(_split(s) for s in
                project["dependencies"] + project["optional-dependencies"]["test"])


def _conda() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_yml_matches_pyproject():
    listed = {}
    for dep in _conda()["dependencies"]:
        if isinstance(dep, dict):
            listed.update(_split(s) for s in dep["pip"] if not s.startswith("-e"))
        elif not dep.startswith(("python=", "pip")) or dep.startswith("pip "):
            listed.update([_split(dep)])
    assert listed == _declared()


def test_environment_installs_the_kit_itself():
    pip = next(d["pip"] for d in _conda()["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip


def test_one_python_floor_everywhere():
    """``requires-python``, ruff's and mypy's target, the conda environment and the README say
    the same version, and this interpreter meets it (the tests use ``tomllib``: 3.11)."""
    config = _project()
    assert config["project"]["requires-python"] == ">=3.11"
    assert config["tool"]["ruff"]["target-version"] == "py311"
    assert config["tool"]["mypy"]["python_version"] == "3.11"
    assert "python=3.11" in _conda()["dependencies"]
    assert "Python 3.11" in (ROOT / "README.md").read_text()
    assert sys.version_info >= (3, 11)


def _imported(tree: ast.AST) -> set[str]:
    """Top-level names of the absolute imports anywhere in ``tree`` (inside functions too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _code_cells(notebook: Path) -> str:
    """A notebook's code cells as one module, IPython magics and shell lines left out."""
    cells = json.loads(notebook.read_text())["cells"]
    lines = [line for c in cells if c["cell_type"] == "code"
             for line in "".join(c["source"]).splitlines()
             if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _imports_by_module() -> dict[str, set[str]]:
    """Every imported top-level module -> the files (relative to the repository) importing it."""
    found: dict[str, set[str]] = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix == ".py":
                source = path.read_text()
            elif path.suffix == ".ipynb" and ".ipynb_checkpoints" not in path.parts:
                source = _code_cells(path)
            else:
                continue
            for name in _imported(ast.parse(source, filename=str(path))):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _local_modules() -> set[str]:
    """The kit itself and the scripts' sibling modules (``benchmarks/harness.py``, ...)."""
    return {"paperlib"} | {p.stem for folder in SOURCES for p in (ROOT / folder).glob("*.py")}


def test_the_import_scan_sees_what_it_must():
    found = _imports_by_module()
    assert {"torch", "numpy", "PIL", "yaml", "pytorch_grad_cam", "cv2", "nbformat"} <= set(found)
    assert "tests/test_environment.py" in found["yaml"]
    assert "paperlib/saved_notebook.py" in found["nbformat"]   # imported inside a function
    assert {"harness", "configs"} <= _local_modules()


def test_every_imported_third_party_module_is_declared():
    """Each module imported by paperlib/, tests/, benchmarks/ and the notebooks that is neither the
    standard library nor the kit's own comes from a distribution listed in pyproject.toml (the
    installed metadata maps import names to distributions: ``yaml`` -> PyYAML, ``PIL`` ->
    pillow, ``cv2`` -> opencv-python-headless)."""
    declared = set(_declared())
    providers = importlib.metadata.packages_distributions()
    local = _local_modules()
    undeclared = {}
    for module, files in sorted(_imports_by_module().items()):
        if module in sys.stdlib_module_names or module in local or module == "__future__":
            continue
        dists = {_normal(d) for d in providers.get(module, [])}
        if not dists & declared:
            undeclared[module] = (sorted(dists) or "not installed", sorted(files)[:3])
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def _lock() -> dict[str, str]:
    """``requirements.lock``: distribution -> pinned version (every line ``name==version``)."""
    pins = {}
    for n, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), start=1):
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"requirements.lock:{n}: {line!r} is not name==version"
        pins[_normal(name)] = version
    return pins


def test_lock_pins_every_declared_package_within_its_bounds():
    """The lock (``make lock``) pins each package of pyproject.toml (and so environment.yml) at a
    version its bounds admit: pinning never leaves the declared ranges."""
    from packaging.specifiers import SpecifierSet

    pins = _lock()
    missing = sorted(set(_declared()) - set(pins))
    assert not missing, f"requirements.lock lacks {missing}: run `make lock`"
    outside = {name: (pins[name], spec) for name, spec in _declared().items()
               if not SpecifierSet(spec).contains(pins[name], prereleases=True)}
    assert not outside, f"requirements.lock pins outside pyproject.toml's bounds: {outside}"
    assert "paperlib" not in pins


def test_the_committed_results_ran_with_the_locked_versions():
    """Where ``results/reproduce_summary.json`` records package versions (paperlib.provenance),
    each declared package's equals the lock's pin."""
    summary = json.loads((ROOT / "results" / "reproduce_summary.json").read_text())
    if "packages" not in summary:
        import pytest
        pytest.skip("the committed results predate the version record")
    pins = _lock()
    differ = {name: (version, pins.get(name)) for name, version in summary["packages"].items()
              if name in _declared() and version is not None and pins.get(name) != version}
    assert not differ, f"results ran with versions other than requirements.lock's: {differ}"


def test_citation_and_licence_agree_with_pyproject():
    """CITATION.cff is valid YAML naming the kit's version and licence (pyproject.toml's), the
    paper as its reference with its DOI, and LICENSE holds that licence's text."""
    project = _project()["project"]
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == cff["preferred-citation"]["version"] == project["version"]
    assert cff["license"] == project["license"]["text"] == "MIT"
    paper = cff["references"][0]
    assert paper["doi"] == "10.3390/app12083846" and paper["year"] == 2022
    assert [a["family-names"] for a in paper["authors"]] == ["An", "Joe"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
