"""`import pml_rt` and every submodule import without the heavy optional libraries."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pml_rt

HEAVY = ("torch", "tensorrt", "cupy", "ray", "cv2")
NEEDS_TORCH = ("pml_rt.network",)


def test_import_pml_rt_loads_no_heavy_library():
    code = "import sys, pml_rt, pml_rt.cli, pml_rt.segmenter, pml_rt.backends; " \
           f"print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_submodule_imports_without_extras():
    names = [m.name for m in pkgutil.walk_packages(pml_rt.__path__, "pml_rt.")
             if not m.name.startswith(NEEDS_TORCH)]
    code = ("import importlib, sys\n"
            "class Block:\n"
            f"    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {HEAVY!r}: raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            "print('ok', len(" + repr(names) + "))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]
