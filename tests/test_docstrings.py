"""Project docstring rules checked over the whole package (numpydoc, docs/design.md)."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(REPO, "gpuspec")
EXCLUDED = (os.path.join(PKG, "testing"),)


def _modules():
    for root, dirs, files in os.walk(PKG):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        if root.startswith(EXCLUDED):
            continue
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(root, f)


def _public_without_backends(path):
    """``file:line name`` of public functions and public-class methods lacking 'Backends:'."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    rel = os.path.relpath(path, REPO)
    missing = []

    def visit(body, prefix=""):
        for n in body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and not n.name.startswith("_"):
                if "Backends:" not in (ast.get_docstring(n) or ""):
                    missing.append(f"{rel}:{n.lineno} {prefix}{n.name}")
            elif isinstance(n, ast.ClassDef) and not n.name.startswith("_"):
                visit(n.body, n.name + ".")

    visit(tree.body)
    return missing


def test_scan_covers_the_package():
    paths = list(_modules())
    rels = {os.path.relpath(p, PKG) for p in paths}
    assert {"backend.py", os.path.join("launch", "cli.py"),
            os.path.join("calibrate", "util.py"), os.path.join("qa", "mpl.py")} <= rels
    assert not any(r.startswith("testing" + os.sep) for r in rels)


def test_scan_finds_a_missing_backends_line(tmp_path):
    p = tmp_path / "m.py"
    p.write_text('def f(x):\n    """Doc."""\n\n\nclass C:\n    def g(self):\n        pass\n\n'
                 '    def _h(self):\n        pass\n\n\ndef _private():\n    pass\n\n\n'
                 'def ok():\n    """Doc.\n\n    Backends: host only.\n    """\n')
    found = [m.split(" ", 1)[1] for m in _public_without_backends(str(p))]
    assert found == ["f", "C.g"]


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: os.path.relpath(p, PKG))
def test_every_public_function_names_its_backends(path):
    """Each public function and public-class method says which backends it supports."""
    missing = _public_without_backends(path)
    assert not missing, "public functions without a 'Backends:' line: " + ", ".join(missing)
