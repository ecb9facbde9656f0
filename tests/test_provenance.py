"""paperlib.provenance: the commit, the versions and the machine recorded beside results."""

import subprocess
from pathlib import Path

import pytest

from paperlib import provenance


@pytest.mark.parametrize("spec, name", [("torch>=2.4,<=2.14.1", "torch"), ("PyYAML>=5.1", "pyyaml"),
                                        ("grad_cam", "grad-cam"), ("a.b-c_d[x]>1", "a-b-c-d")])
def test_requirement_name_normalises_as_pep503(spec, name):
    assert provenance.requirement_name(spec) == name


def test_requirement_name_refuses_a_string_with_no_name():
    with pytest.raises(ValueError, match="expected a distribution name"):
        provenance.requirement_name(">=1.0")


def test_package_versions_reads_installed_metadata_and_marks_the_absent():
    versions = provenance.package_versions(["torch", "no-such-distribution-xyz"])
    import torch
    assert versions["torch"] == torch.__version__.split("+")[0]
    assert versions["no-such-distribution-xyz"] is None


def test_kit_packages_cover_the_declared_dependencies():
    names = provenance.kit_packages()
    for name in ("torch", "torchvision", "timm", "pandas", "grad-cam", "torchcam"):
        assert name in names
    assert names == sorted(set(names))


def test_git_commit_of_a_checkout_and_outside_one(tmp_path: Path):
    assert provenance.git_commit(tmp_path) is None
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("a")
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), *env, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    assert provenance.git_commit(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "f").write_text("b")
    assert provenance.git_commit(tmp_path) == {"commit": head, "dirty": True}


def test_record_holds_commit_python_machine_and_packages(tmp_path: Path):
    r = provenance.record(tmp_path)
    assert set(r) == {"git", "python", "platform", "machine", "processor", "packages"}
    assert r["git"] is None and r["packages"]["torch"]
