"""The installed packages carry names of their own: another distribution's ``plugin`` or
``operators`` can neither shadow them nor be shadowed by them."""

import subprocess
import sys


def test_installed_package_names_are_unique(tmp_path):
    code = ("import importlib.util as u, cilp_plugin.cli, cilp_operators, mm_models; "
            "print(u.find_spec('plugin'), u.find_spec('operators'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None"]
