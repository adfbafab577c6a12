"""Shared pieces of the benchmarks (benchopt's split for the paper's experiments).

A script in ``benchmarks/paper/``, ``speed/`` or ``peers/`` puts ``benchmarks/`` on its
path (one ``sys.path`` line) and imports from here; run it from the repository root, e.g.
``python benchmarks/paper/fig2_known_codes.py --profile quick``.

``datasets``    the tasks: the paper's generator with the code distribution as a parameter,
                the train/test split, the seeds;
``methods``     the methods on a task (each defined once, in ``sklearn_sparsegap.experiments._methods``,
                which ``sparsegap compare`` uses too), in the authors' settings and in the
                library's defaults;
``objective``   what is measured on a fitted method (MCC, dictionary MCC, MSE, L0, FLOPs);
``references``  the paper's and the authors' numbers, stored as JSON in
                ``benchmarks/paper/references/``;
``runner``      profiles, the command line, joblib sweeps, learning curves, dataset
                variants (an experiment rerun on another distribution), JSON/PNG output
                and the summary table;
``plots``       the figure helpers (matplotlib, imported only when figures are drawn);
``tables``      plain-text tables (the summaries and the speed benchmarks' printouts);
``memory``      peak resident memory of a process (``VmHWM``);
``paths``       paths as records write them (``DATA_DIR/<name>``, never a machine's);
``options``     command-line options several scripts share (``--activations``);
``saelens``     SAELens's own SAEs on our data (imports ``sae_lens``: peers and speed only);
``peer_saes``   sparsify's and dictionary_learning's own trainers behind fit/transform
                (imported by ``peers/side_by_side.py``).

Each experiment script (``benchmarks/paper/fig*.py`` and friends) defines ``PROFILES``, a
``run(settings, n_jobs, progress)`` returning plain records (with a ``distribution``
parameter where its data take one), ``figures(result)`` and ``summary(result)``, and ends
with ``runner.main(...)``. ``benchmarks/paper/run_all.py`` is the one runner of them all.
"""
