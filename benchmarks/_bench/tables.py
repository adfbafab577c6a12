"""Plain-text tables: the experiments' summaries and the speed benchmarks' printouts."""


def format_table(rows, columns, *, title=None):
    """A plain-text table of ``rows`` (dicts) with ``columns`` (key or (key, header))."""
    columns = [(c, c) if isinstance(c, str) else c for c in columns]

    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}"  # three significant digits: MCCs, losses and FLOPs alike
        return "" if value is None else str(value)

    table = [[header for _, header in columns]]
    table += [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)) for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if title:
        lines.insert(0, title)
    return "\n".join(lines)


def with_std(key, header):
    """The columns of a mean and its standard deviation: ``key`` and ``key_std`` ("±")."""
    return [(key, header), (f"{key}_std", "±")]


def print_table(title, header, rows):
    """Print ``rows`` (sequences of cells, one per ``header`` entry) under a blank line and
    ``title``: :func:`format_table` of positional columns."""
    columns = list(enumerate(header))
    print("\n" + format_table([dict(enumerate(row)) for row in rows], columns, title=title))
