"""paperlib.reproduce.choose_kernel: the kit's kernel when registered, else the interpreter's own,
with one line either way (never papermill's bare NoSuchKernel)."""

from types import SimpleNamespace

import jupyter_client.kernelspec as kernelspec

from paperlib import reproduce


class _Specs:
    def __init__(self, names):
        self.names = names

    def find_kernel_specs(self):
        return {n: f"/k/{n}" for n in self.names}

    def get_kernel_spec(self, name):
        return SimpleNamespace(argv=[f"/env/{name}/bin/python", "-m", "ipykernel_launcher"])


def test_the_kits_kernel_when_registered(monkeypatch, capsys):
    monkeypatch.setattr(kernelspec, "KernelSpecManager", lambda: _Specs(["python3", "paperlib"]))
    assert reproduce.choose_kernel() == "paperlib"
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "'paperlib' (the kit's" in out


def test_the_interpreters_kernel_otherwise_saying_how_to_register(monkeypatch, capsys):
    monkeypatch.setattr(kernelspec, "KernelSpecManager", lambda: _Specs(["python3"]))
    assert reproduce.choose_kernel() == "python3"
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "not registered" in out and "/env/python3/bin/python" in out
    assert "-m ipykernel install --user --name paperlib" in out
