"""Sphinx configuration of the sklearn-sparsegap documentation.

Build (from the repository root, after ``pip install -e ".[docs]"``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is generated from the numpydoc docstrings by ``sphinx.ext.autosummary``
(stub pages in ``docs/generated/``, rewritten on every build) and ``numpydoc``.
"""

import os
import re
import sys

# Use the installed package; fall back to the source tree next to this directory.
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if os.path.isdir(os.path.join(_ROOT, "sklearn_sparsegap")):
    sys.path.insert(0, _ROOT)

import sklearn_sparsegap  # noqa: E402

project = "sklearn-sparsegap"
author = "sklearn-sparsegap developers"
copyright = "sklearn-sparsegap developers"
release = sklearn_sparsegap.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]

templates_path = ["_templates"]
# Fragments (docs/_defaults_*.rst) are pulled into a page with ``.. include::``, not built alone.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "_defaults_*.rst"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "literal"

# --- autosummary / autodoc ------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "groupwise"}
# Signatures show the defaults as written; the docstrings carry the types.
autodoc_typehints = "none"

# --- numpydoc -------------------------------------------------------------------------
# Methods are documented by the autosummary class template (one entry each); numpydoc's
# own member tables would document them a second time.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
# Examples are run by the test-suite (tests/test_docstrings.py), not by the build.
numpydoc_use_plots = False

# --- HTML -----------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"sklearn-sparsegap {release}"
html_static_path = []
html_theme_options = {
    "description": "Sparse autoencoders, sparse coding and the amortisation gap",
    "fixed_sidebar": True,
}


# --- docstring fix-ups ----------------------------------------------------------------
# numpydoc emits a parameter's type as reStructuredText, where a name ending in "_" is a
# hyperlink reference: "ndarray of shape (n_features_in_,)" fails with 'Unknown target
# name: "n_features_in"'. Inside a "shape (...)" group, render such names as literals.
_SHAPE = re.compile(r"shape \(([^()]*)\)")
_TRAILING_UNDERSCORE = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?![`\w])")


def _literal_shape_names(match):
    inner = _TRAILING_UNDERSCORE.sub(r"``\1``", match.group(1))
    return f"shape ({inner})"


# Methods inherited from scikit-learn (set_output, get_metadata_routing, ...) cite labels
# of scikit-learn's own documentation, which do not exist here; keep their text only.
_REF_WITH_TEXT = re.compile(r":ref:`([^`<]*?)\s*<[^`>]+>`")
_BARE_REF = re.compile(r":ref:`([^`<]+)`")
# ... and terms of its glossary (set_fit_request, made for fit's X_val).
_TERM = re.compile(r":term:`([^`<]*?)(?:\s*<[^`>]+>)?`")


def _is_foreign(obj):
    root = (getattr(obj, "__module__", None) or "").split(".")[0]
    return root not in ("", "sklearn_sparsegap")


def _fix_docstring(app, what, name, obj, options, lines):
    if what == "data" and isinstance(obj, str):
        # A module-level string (``__version__``) would otherwise show ``str``'s docstring.
        if name.endswith("__version__"):
            lines[:] = [f"The version of the installed package, ``{obj}``."]
        else:
            lines[:] = []
        return
    foreign = _is_foreign(obj)
    for index, line in enumerate(lines):
        line = _SHAPE.sub(_literal_shape_names, line)
        if foreign:
            line = _REF_WITH_TEXT.sub(r"\1 (scikit-learn documentation)", line)
            line = _BARE_REF.sub(r"``\1`` (scikit-learn documentation)", line)
            line = _TERM.sub(r"\1", line)
        lines[index] = line


def setup(app):
    app.connect("autodoc-process-docstring", _fix_docstring)
