"""The outputs of ``sparsegap gap``: the table, the answer in words, the Pareto figure,
the one-file HTML report, results.json and results.csv (see :mod:`._gap`)."""

import base64
import csv
import html
import io
import json
import os
from pathlib import Path

import numpy as np

from ._report import say

TABLE_COLUMNS = ("method", "fvu", "fvu_reduction", "mean_l0", "dead_fraction",
                 "dense_fraction", "loss_recovered", "loss_recovered_low",
                 "loss_recovered_high", "flops_per_row", "flops_ratio", "seconds_per_1k_rows",
                 "budget")
# The printed table: the interval goes in a note under it (``loss_note``), the budgets
# in lines of their own.
PRINTED_COLUMNS = tuple(c for c in TABLE_COLUMNS
                        if c not in ("loss_recovered_low", "loss_recovered_high", "budget"))
_HEADERS = {"method": "method", "fvu": "FVU", "fvu_reduction": "FVU cut", "mean_l0": "L0",
            "dead_fraction": "dead", "dense_fraction": "dense",
            "loss_recovered": "loss rec.", "loss_recovered_low": "loss rec. low",
            "loss_recovered_high": "loss rec. high", "flops_per_row": "FLOPs/row",
            "flops_ratio": "x SAE FLOPs", "seconds_per_1k_rows": "s/1k rows",
            "budget": "budget"}


def sae_name(sae):
    """A short description of a loaded SAE: activation, k and width."""
    k = f" k={sae.n_nonzero_coefs}" if sae.activation == "topk" else ""
    return f"SAE ({sae.activation}{k}, {sae.n_components} latents)"


def build_table(sae, refiners, tallies, loss_scores, loss_intervals=None):
    """The table of a run: one entry per method (the SAE, then each budget) in each of
    ``TABLE_COLUMNS``; ``loss_intervals`` the ``(low, high)`` bootstrap interval of each
    loss recovered (None where there is none)."""
    if loss_intervals is None:
        loss_intervals = [None] * len(loss_scores)
    names = [sae_name(sae)] + [name for name, _, _ in refiners]
    budgets = ["its own codes"] + [description for _, _, description in refiners]
    estimators = [sae] + [refiner for _, refiner, _ in refiners]
    n = tallies[0].n
    sae_flops = sae.inference_flops(n) / n
    table = {column: [] for column in TABLE_COLUMNS}
    sae_fvu = tallies[0].metrics()["fvu"]
    for name, budget, estimator, tally, loss, interval in zip(
            names, budgets, estimators, tallies, loss_scores, loss_intervals):
        metrics = tally.metrics()
        flops = estimator.inference_flops(n) / n
        table["method"].append(name)
        table["budget"].append(budget)
        table["fvu"].append(metrics["fvu"])
        table["fvu_reduction"].append(1.0 - metrics["fvu"] / sae_fvu if sae_fvu > 0 else 0.0)
        table["mean_l0"].append(metrics["mean_l0"])
        table["dead_fraction"].append(metrics["dead_fraction"])
        table["dense_fraction"].append(metrics["dense_fraction"])
        table["loss_recovered"].append(loss)
        table["loss_recovered_low"].append(None if interval is None else interval[0])
        table["loss_recovered_high"].append(None if interval is None else interval[1])
        table["flops_per_row"].append(flops)
        table["flops_ratio"].append(flops / sae_flops)
        table["seconds_per_1k_rows"].append(metrics["seconds_per_1k_rows"])
    return table


def answer(table):
    """The result in one sentence, from the table's first ITO row (the same-L0 budget)."""
    cut, ratio = table["fvu_reduction"][1], table["flops_ratio"][1]
    text = (f"ITO at the same L0 recovers {100 * cut:.1f}% of the variance your SAE leaves "
            f"unexplained (FVU {table['fvu'][0]:.4f} -> {table['fvu'][1]:.4f}, L0 "
            f"{table['mean_l0'][0]:.1f} -> {table['mean_l0'][1]:.1f}), for {ratio:.1f}x its "
            "inference FLOPs")
    if table["loss_recovered"][0] is not None and table["loss_recovered"][1] is not None:
        text += (f"; loss recovered {table['loss_recovered'][0]:.3f} -> "
                 f"{table['loss_recovered'][1]:.3f}")
    best = int(np.argmin(table["fvu"]))
    if best > 1:
        text += (f". The best budget, {table['method'][best]}, cuts the FVU by "
                 f"{100 * table['fvu_reduction'][best]:.1f}% at L0 "
                 f"{table['mean_l0'][best]:.1f} for {table['flops_ratio'][best]:.1f}x")
    return text + "."


def loss_note(table, settings):
    """One line on how loss recovered was measured and how sure it is (None without it):
    the tokens and sequences, and each method's bootstrap interval."""
    if not settings.get("loss_recovered_tokens"):
        return None
    intervals = "; ".join(
        f"{name} {low:.3f}-{high:.3f}"
        for name, low, high in zip(table["method"], table["loss_recovered_low"],
                                   table["loss_recovered_high"])
        if low is not None)  # fmt: skip
    text = (f"loss recovered on {settings['loss_recovered_tokens']:,} predicted tokens of "
            f"{settings['loss_recovered_sequences']} sequences (position 0 kept true and "
            "left out)")
    if intervals:
        text += f"; 95% bootstrap intervals over the sequences: {intervals}"
    return text


def _cell(column, value):
    if value is None:
        return "-"
    if column in ("method", "budget"):
        return str(value)
    if column == "fvu_reduction":
        return f"{100 * value:.1f}%"
    if column == "flops_per_row":
        return f"{value:.3g}"
    if column == "flops_ratio":
        return f"{value:.1f}x"
    if column == "mean_l0":
        return f"{value:.1f}"
    if column == "seconds_per_1k_rows":
        return f"{value:.3f}"
    return f"{value:.4f}" if column == "fvu" else f"{value:.3f}"


def format_table(table, columns=PRINTED_COLUMNS):
    """The table as aligned text (one line per method; the budgets are listed apart)."""
    header = [_HEADERS[c] for c in columns]
    lines = [[_cell(c, table[c][i]) for c in columns] for i in range(len(table["method"]))]
    widths = [max(len(r[j]) for r in [header, *lines]) for j in range(len(columns))]

    def render(cells):
        return "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                         for j, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([render(header), render(["-" * w for w in widths])]
                     + [render(line) for line in lines])


def plot_pareto(table, path=None, *, title=None):
    """FVU against inference FLOPs per row: the SAE's point and ITO's budgets. Writes a
    PNG to ``path`` (if given) and returns its bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    flops, fvu = np.array(table["flops_per_row"]), np.array(table["fvu"])
    ax.scatter(flops[:1], fvu[:1], s=90, marker="s", color="tab:red", zorder=3,
               label=table["method"][0])
    order = 1 + np.argsort(flops[1:], kind="stable")
    ax.scatter(flops[order], fvu[order], s=50, color="tab:blue", zorder=3, label="SAE + ITO")
    # The Pareto front: each point with a lower FVU than every cheaper one.
    front, best = [], np.inf
    for i in np.argsort(flops, kind="stable"):
        if fvu[i] < best:
            front.append(i)
            best = fvu[i]
    ax.plot(flops[front], fvu[front], "--", color="gray", zorder=1, label="Pareto front")
    for i in order:
        ax.annotate(f"{table['method'][i].removeprefix('SAE+ITO ')} (L0 {table['mean_l0'][i]:.0f})",
                    (flops[i], fvu[i]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("inference FLOPs per row (log)")
    ax.set_ylabel("FVU (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _contexts_html(contexts):
    """The rows where a latent changed most: its context text with the token marked
    (when decoded), else the row, and the SAE's and ITO's codes there."""
    esc = html.escape
    items = []
    for context in contexts:
        where = (f"&hellip;{esc(context['text'][-80:])}<mark>{esc(context['token'])}</mark>"
                 if "token" in context else f"row {context['row']}")
        items.append(f"{where} ({context['sae']:.3g} &rarr; {context['ito']:.3g})")
    return "<br>".join(items)


def write_html(record, path, png=None):
    """A one-file HTML report: the answer, the table, the figure (base64) and the latents
    whose codes ITO changes most. No scripts, nothing fetched."""
    esc = html.escape
    table, latents, settings = record["table"], record["changed_latents"], record["settings"]
    columns = TABLE_COLUMNS
    head = "".join(f"<th>{esc(_HEADERS[c])}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(_cell(c, table[c][i]))}</td>" for c in columns)
                   + "</tr>" for i in range(len(table["method"])))
    contexts = latents.get("contexts") or [[] for _ in latents["latent"]]
    latent_rows = "".join(
        f"<tr><td>{latents['latent'][i]}</td><td>{latents['mean_abs_change'][i]:.4g}</td>"
        f"<td>{latents['sae_frequency'][i]:.4f}</td><td>{latents['ito_frequency'][i]:.4f}</td>"
        f"<td>{latents['rows_added'][i]}</td><td>{latents['rows_dropped'][i]}</td>"
        f"<td class=\"contexts\">{_contexts_html(contexts[i])}</td></tr>"
        for i in range(len(latents["latent"])))
    figure = ("" if png is None else
              f'<img alt="FVU against inference FLOPs" src="data:image/png;base64,'
              f'{base64.b64encode(png).decode()}">')
    facts = "".join(f"<li>{esc(str(line))}</li>" for line in (
        f"SAE: {settings['sae']} ({settings['sae_format']})",
        f"activations: {settings['activations']}", settings["rows_note"],
        (f"ITO changed the codes of {100 * settings['rows_changed_fraction']:.1f}% of the "
         "rows (first budget)"), loss_note(table, settings)) if line)
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sparsegap gap report</title>
<link rel="icon" href="data:,">
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;
text-align:right}}td:first-child,th:first-child{{text-align:left}}
.answer{{font-size:1.2em;background:#eef5ff;padding:.8em;border-radius:6px}}
td.contexts{{text-align:left;font-size:.9em}}mark{{background:#ffe08a}}</style></head>
<body><h1>Amortisation gap</h1><p class="answer" id="answer">{esc(record['answer'])}</p>
<ul>{facts}</ul><h2>Budgets</h2><table id="results"><thead><tr>{head}</tr></thead>
<tbody>{body}</tbody></table>{figure}
<h2>Latents whose codes ITO changes most ({esc(table['method'][1])})</h2>
<table id="latents"><thead><tr><th>latent</th><th>mean |change| per row</th>
<th>SAE frequency</th><th>ITO frequency</th><th>rows turned on</th><th>rows turned off</th>
<th>where it changed most (SAE code &rarr; ITO code)</th></tr></thead><tbody>{latent_rows}</tbody></table></body></html>
"""
    Path(path).write_text(text, encoding="utf-8")
    return path


def check_out(out):
    """Refuse an ``out`` that holds anything (another run): nothing is overwritten."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {str(out)!r} already holds files (another run?): choose a new "
                         "or empty directory; nothing is overwritten")
    existing = out.resolve()
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        raise ValueError(f"--out: cannot write under {str(existing)!r}")


def write_outputs(record, out, *, progress=True):
    """results.json, results.csv, pareto.png and report.html in ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv",
             "html": out / "report.html"}
    table = record["table"]
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE_COLUMNS)
        for i in range(len(table["method"])):
            writer.writerow(["" if table[c][i] is None else table[c][i] for c in TABLE_COLUMNS])
    png = None
    try:
        png = plot_pareto(table, out / "pareto.png", title=record["settings"]["sae"])
        paths["plot"] = out / "pareto.png"
    except ImportError:
        say("matplotlib is not installed: no figure", progress=progress)
    write_html(record, paths["html"], png)
    paths = {key: str(value) for key, value in paths.items()}
    with open(paths["json"], "w") as handle:
        json.dump({key: value for key, value in record.items() if key != "paths"}
                  | {"paths": paths}, handle, indent=2)
        handle.write("\n")
    return paths
