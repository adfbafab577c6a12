"""The documentation: the API reference covers every public name, and the Sphinx build
passes with warnings as errors (the command CI runs).

The build test is skipped when Sphinx or numpydoc is not installed
(``pip install -e ".[docs]"``), so the main test run does not need the docs extra.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sklearn_sparsegap
from sklearn_sparsegap import flops

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The documented command (docs/user_guide.rst, .ci/run), run on a copy of docs/.
BUILD_COMMAND = "python -m sphinx -W --keep-going -b html docs docs/_build/html"
# A guard against a hung build, not a speed test: the build takes about 15 s on 2 quiet
# cores, and a test run shares the machine.
BUILD_TIMEOUT = 600  # seconds


def _autosummary_entries(text):
    """Names listed in the ``.. autosummary::`` blocks of an rST file, qualified by the
    preceding ``.. currentmodule::``."""
    names = set()
    module = None
    in_block = False
    for line in text.splitlines():
        current = re.match(r"\.\. currentmodule:: (\S+)", line)
        if current:
            module, in_block = current.group(1), False
            continue
        if line.startswith(".. autosummary::"):
            in_block = True
            continue
        if in_block:
            if line.strip().startswith(":") or not line.strip():
                continue
            if not line.startswith("   "):
                in_block = False
                continue
            names.add(f"{module}.{line.strip()}")
    return names


def test_api_reference_lists_every_public_name():
    listed = _autosummary_entries((DOCS / "api.rst").read_text())
    expected = {f"sklearn_sparsegap.{name}" for name in sklearn_sparsegap.__all__}
    expected |= {f"sklearn_sparsegap.flops.{name}" for name in flops.__all__}
    assert expected - listed == set(), "add these to docs/api.rst"
    assert listed - expected == set(), "docs/api.rst lists names that are not public"


def test_ci_builds_the_documented_command():
    assert BUILD_COMMAND in (ROOT / ".ci" / "run").read_text()
    assert BUILD_COMMAND in (DOCS / "user_guide.rst").read_text()


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    # Build a copy, so the stub pages written by autosummary stay out of the source tree.
    source = tmp_path / "docs"
    shutil.copytree(
        DOCS, source, ignore=shutil.ignore_patterns("_build", "generated", "__pycache__")
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
               str(source), str(tmp_path / "html")]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "WARNING" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    for page in ("index", "user_guide", "theorem", "api"):
        assert (tmp_path / "html" / f"{page}.html").is_file()
    for name in sklearn_sparsegap.__all__:
        assert (tmp_path / "html" / "generated" / f"sklearn_sparsegap.{name}.html").is_file()
