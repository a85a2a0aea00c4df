from __future__ import annotations

import subprocess
import sys

import recops


def test_version_subcommand_and_console_script() -> None:
    out = subprocess.run([sys.executable, "-m", "recops", "version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == recops.__version__
    script = subprocess.run(["recops", "--help"], capture_output=True, text=True, check=True)
    assert "crds" in script.stdout


def test_operator_side_never_imports_torch() -> None:
    code = "import sys, recops.cli, recops.api.crd; recops.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
