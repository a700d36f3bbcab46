"""``import distillscope`` stays light: no torch, timm, matplotlib, scikit-learn, dask or netCDF backend, and no kernel compiled."""

import subprocess
import sys

import distillscope


def test_import_is_light():
    code = (
        "import sys, distillscope\n"
        "heavy = [m for m in ('torch', 'timm', 'matplotlib', 'sklearn', 'dask', 'h5netcdf', 'netCDF4') if m in sys.modules]\n"
        "kernels = sys.modules.get('distillscope._kernels')\n"
        "compiled = kernels is not None and any(\n"
        "    getattr(f, 'signatures', None) for f in vars(kernels).values())\n"
        "print(heavy, 'numba' in sys.modules, compiled)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False False"


def test_public_api_is_explicit():
    assert "analyze" in distillscope.__all__
    for name in distillscope.__all__:
        assert hasattr(distillscope, name), name
