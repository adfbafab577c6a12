"""Shared pieces of the paper-experiment benchmarks (benchopt's split).

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
``plots``       the figure helpers (matplotlib, imported only when figures are drawn).

Each experiment script (``benchmarks/paper/fig*.py`` and friends) defines ``PROFILES``, a
``run(settings, n_jobs, progress)`` returning plain records (with a ``distribution``
parameter where its data take one), ``figures(result)`` and ``summary(result)``, and ends
with ``runner.main(...)``. ``benchmarks/paper/run_all.py`` is the one runner of them all.
"""
