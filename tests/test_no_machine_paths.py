"""The docs, the benchmarks and their records name no directory of one machine.

A command in the docs or a recorded JSON that says ``/work/data/smol_l15`` or
``/home/alice/venv/bin/python`` cannot be run anywhere else: they use placeholders
(``ACTIVATIONS_DIR``, ``DATA_DIR``, ``PEERS_PYTHON``) with the command that makes them.

What counts as a machine path (``MACHINE_PATH``): an absolute path into a place where a
machine keeps its own data, environments or scratch files — ``/work/``, ``/root/``,
``/home/<user>/``, ``/Users/<user>/``, ``/tmp/<name>``, ``/mnt/``, ``/scratch/``,
``/var/folders/`` (macOS temporary files) — or a Windows drive path (``C:\\...``).
What does not:

- URLs (``https://host/home/...``): they name a page, not a directory of this machine,
  and are removed before matching;
- system paths that are the same on every machine of a kind and that the docs name on
  purpose: ``/usr/bin/chromium`` (the Debian package the feature-browser test drives),
  ``/usr/bin/time``, ``/dev/null``, ``/proc/loadavg`` (what a benchmark reads on Linux);
  none of ``/usr/``, ``/dev/``, ``/proc/``, ``/etc/`` is in the pattern;
- paths relative to the repository or the working directory (``docs/results/...``) and
  home-relative defaults (``~/.cache/sklearn-sparsegap``): they resolve on every machine.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "docs", ROOT / "benchmarks", ROOT / "README.md"]
TEXT_SUFFIXES = {".md", ".rst", ".py", ".json", ".txt", ".csv", ".html"}
# Build output and run output that git ignores (benchmarks/results/ is the experiments'
# default --out): not part of the repository.
SKIPPED_PARTS = {"_build", "__pycache__", ".ipynb_checkpoints"}
SKIPPED_DIRS = [ROOT / "benchmarks" / "results"]

URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S*", re.IGNORECASE)
MACHINE_PATH = re.compile(
    r"(?<![\w.~-])"  # the start of a path, not a segment inside one (docs/work/...)
    r"(?:/(?:work|root|mnt|scratch)/"
    r"|/(?:home|Users)/[\w.-]+"
    r"|/tmp/[\w.-]+"
    r"|/var/folders/"
    r"|\b[A-Za-z]:(?:\\\\|\\|/)[\w.-])"  # C:\Users, C:\\Users (JSON), C:/Users
)


def machine_paths(text):
    """``(line number, match)`` of every machine path in ``text`` (URLs left out)."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in MACHINE_PATH.finditer(URL.sub("", line)):
            found.append((number, match.group(0)))
    return found


def scanned_files():
    for place in SCANNED:
        files = [place] if place.is_file() else sorted(place.rglob("*"))
        for path in files:
            if (
                path.is_file()
                and path.suffix in TEXT_SUFFIXES
                and not SKIPPED_PARTS.intersection(path.parts)
                and not any(path.is_relative_to(skipped) for skipped in SKIPPED_DIRS)
            ):
                yield path


@pytest.mark.parametrize(
    "text",
    [
        "PYTHONPATH=$PWD /work/venv-peers/bin/python benchmarks/peers/bench_saelens.py",
        '  "activations": "/work/data/smol_l15",',
        "--activations /home/alice/acts/smol_l15",
        "cp results.json /root/backup/",
        "python -m sklearn_sparsegap compare --output /tmp/compare.json",
        "open /Users/bob/Desktop/run.json",
        '"filepath": "C:\\\\Users\\\\carol\\\\venv\\\\lib\\\\torch.dll"',
        r"set PYTHON=C:\Python311\python.exe",
        "mounted at /mnt/data/acts",
        "(`/work/data/smol_l15`, pydoc",
    ],
)
def test_detector_finds_machine_paths(text):
    assert machine_paths(text), text


@pytest.mark.parametrize(
    "text",
    [
        "see https://github.com/home/work/tmp/x and http://example.org/Users/me/",
        "apt-get install chromium  # /usr/bin/chromium",
        '/usr/bin/time -f "%e s wall" python -m sklearn_sparsegap compare > /dev/null',
        "open('/proc/loadavg').read()",
        "python benchmarks/paper/run_all.py --profile quick --out docs/results",
        "--activations ACTIVATIONS_DIR --output docs/results/wild/saelens.json",
        '"activations": "DATA_DIR/smol_l15"',
        "cache in ~/.cache/sklearn-sparsegap/activations",
        "benchmarks/work/notes.md and docs/tmp/ are relative",
        "the ratio 3:1 and a time 12:30",
    ],
)
def test_detector_leaves_other_paths(text):
    assert not machine_paths(text), machine_paths(text)


def test_scan_reads_the_docs_benchmarks_and_records():
    """The scan sees what it guards (so an empty glob cannot pass the test below)."""
    files = {path.relative_to(ROOT).as_posix() for path in scanned_files()}
    assert "README.md" in files
    assert "docs/results.md" in files
    assert "docs/results/amortisation_gap/amortisation_gap.json" in files
    assert "benchmarks/peers/bench_saelens.py" in files
    assert any(name.startswith("benchmarks/paper/references/") for name in files)
    assert len(files) > 50


def test_no_machine_paths_in_docs_benchmarks_or_records():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {match}"
        for path in scanned_files()
        for number, match in machine_paths(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not found, (
        "absolute paths of one machine (use a placeholder such as ACTIVATIONS_DIR, "
        "DATA_DIR or PEERS_PYTHON, with the command that makes it):\n" + "\n".join(found)
    )
