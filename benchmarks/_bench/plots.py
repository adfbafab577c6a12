"""Figure helpers shared by the experiments (matplotlib, imported lazily by the runner)."""

import numpy as np


def subplots(n_panels, *, width=4.2, height=3.2):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    return figure, list(axes[0])


def curves(ax, records, *, x, y, label_key="method", xlog=False, ylabel=None, xlabel=None):
    """One line per label: the mean of ``y`` over seeds against ``x`` (mean x), with a
    ±1 std band."""
    groups = {}
    for record in records:
        groups.setdefault(record[label_key], {}).setdefault(record["seed"], []).append(record)
    for label, by_seed in groups.items():
        runs = [sorted(rs, key=lambda r: r["step"]) for rs in by_seed.values()]
        length = min(len(run) for run in runs)
        xs = np.mean([[r[x] for r in run[:length]] for run in runs], axis=0)
        ys = np.array([[r[y] for r in run[:length]] for run in runs], dtype=float)
        mean, std = ys.mean(axis=0), ys.std(axis=0)
        (line,) = ax.plot(xs, mean, label=str(label))
        ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if xlog:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.grid(alpha=0.3)


def heatmap(ax, matrix, *, row_labels, col_labels, title, cmap="RdBu", center=0.0, fmt="{:+.2f}"):
    """An annotated heatmap with a colour scale centred on ``center``."""
    matrix = np.asarray(matrix, dtype=float)
    span = np.nanmax(np.abs(matrix - center)) if np.isfinite(matrix).any() else 1.0
    span = span or 1.0
    image = ax.imshow(matrix, cmap=cmap, vmin=center - span, vmax=center + span, origin="lower")
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=8)
    ax.set_title(title)
    return image


def method_labels(records):
    """The methods of ``records`` in first-seen order."""
    return list(dict.fromkeys(r["method"] for r in records))


def method_styles(labels):
    """A fixed (colour, line style) per method across panels; ITO variants dashed."""
    import matplotlib

    palette = [*matplotlib.colormaps["tab10"].colors, *matplotlib.colormaps["Dark2"].colors]
    return {
        label: (palette[i % len(palette)], "--" if "ITO" in label else "-")
        for i, label in enumerate(labels)
    }


def styled_curves(ax, records, styles, *, x, y, **kwargs):
    """:func:`curves` per method in its colour and line style from ``styles``; a method
    with a single step is drawn as a star with a ±1 std error bar."""
    for label in method_labels(records):
        group = [r for r in records if r["method"] == label]
        color, style = styles[label]
        if len({r["step"] for r in group}) == 1:
            values = np.array([r[y] for r in group], dtype=float)
            ax.errorbar(np.mean([r[x] for r in group]), values.mean(), yerr=values.std(),
                        fmt="*", color=color, markersize=9, label=label)  # fmt: skip
            continue
        n_lines, n_fills = len(ax.lines), len(ax.collections)
        curves(ax, group, x=x, y=y, **kwargs)
        for line in ax.lines[n_lines:]:
            line.set_color(color)
            line.set_linestyle(style)
        for fill in ax.collections[n_fills:]:
            fill.set_color(color)
            fill.set_alpha(0.15)
    if kwargs.get("xlog"):
        ax.set_xscale("log")
    ax.set_xlabel(kwargs.get("xlabel") or x)
    ax.set_ylabel(kwargs.get("ylabel") or y)
    ax.grid(alpha=0.3)


def label_axes(ax, xlabel, ylabel, *, log_y=False, log_x_ticks=None, x_base=10,
               minor_ticks=False):
    """Axis labels, a grid on major and minor ticks, a log y scale when ``log_y``; with
    ``log_x_ticks``, a log x axis (base ``x_base``) labelled at those ticks only, its minor
    ticks drawn unlabelled with ``minor_ticks``, else left out."""
    if log_x_ticks is not None:
        ax.set_xscale("log", base=x_base)
        ax.set_xticks(log_x_ticks, [f"{t:g}" for t in log_x_ticks])
        if minor_ticks:
            from matplotlib.ticker import NullFormatter

            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.minorticks_off()
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")


def runs_note(result):
    """"<profile> profile, <n> seeds, mean ± std": how many runs a figure averages."""
    n_seeds = len({r["seed"] for r in result["records"]})
    return f"{result['profile']} profile, {n_seeds} seeds, mean ± std"


def finish_with_side_legend(figure, axis, title):
    """``axis``'s legend to the right of the figure, ``title`` above it, tight layout."""
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def finish_with_paper_marker(figure, axis, title, fmt, *, label, **style):
    """``axis``'s legend with one more entry, the ``fmt`` marker of the paper's numbers
    (``label``), ``title`` above the figure, tight layout."""
    axis.plot([], [], fmt, label=label, **style)
    axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
