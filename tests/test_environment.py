"""The conda description and pyproject.toml list the same packages with the same bounds."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _split(spec: str) -> tuple[str, str]:
    name = re.match(r"^[A-Za-z0-9_.\-]+", spec).group(0)
    return name.lower().replace("_", "-"), spec[len(name):].replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(s) for s in
                  project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            listed.update(_split(s) for s in dep["pip"] if not s.startswith("-e"))
        elif not dep.startswith(("python=", "pip")) or dep.startswith("pip "):
            listed.update([_split(dep)])
    assert listed == wanted


def test_environment_installs_the_kit_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip
