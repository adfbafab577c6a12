"""The paper's and the authors' recorded numbers, stored as data in ``benchmarks/paper/references/``.

One JSON file per experiment: ``experiment`` (the paper's figure or appendix), ``source``
(where the numbers come from and what they are), optional ``notes``, and ``tables``: named
lists of flat records (``{"method": "SAE", "latent_mcc": 0.862, ...}``). :func:`lookup`
turns a table into the dictionaries the experiment scripts index.
"""

import json
from functools import cache
from pathlib import Path

REFERENCES = Path(__file__).resolve().parents[1] / "paper" / "references"


@cache
def _load(experiment):
    return json.loads((REFERENCES / f"{experiment}.json").read_text())


def load(experiment):
    """The whole reference file of ``experiment`` (a fresh copy)."""
    return json.loads(json.dumps(_load(experiment)))


def records(experiment, table):
    """The records of one table (fresh copies)."""
    return [dict(record) for record in _load(experiment)["tables"][table]]


def _key(record, spec):
    if isinstance(spec, tuple):
        return tuple(record.get(field) for field in spec)
    return record.get(spec)


def lookup(experiment, table, keys, values):
    """A table as nested dictionaries.

    ``keys`` is a field name, a tuple of field names (one tuple key), or a list of those
    (one level of nesting each). ``values`` is a field name (the leaf is that number;
    records without it are left out) or a tuple of field names (the leaf is a tuple, None
    where a record lacks a field).
    """
    levels = keys if isinstance(keys, list) else [keys]
    out = {}
    for record in _load(experiment)["tables"][table]:
        if isinstance(values, tuple):
            leaf = tuple(record.get(field) for field in values)
        elif values in record:
            leaf = record[values]
        else:
            continue
        node = out
        for spec in levels[:-1]:
            node = node.setdefault(_key(record, spec), {})
        node[_key(record, levels[-1])] = leaf
    return out
