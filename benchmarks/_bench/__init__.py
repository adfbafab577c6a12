"""Shared pieces of the paper-experiment benchmarks (benchopt's split).

``datasets``  the tasks (the paper's generator, train/test split, seeds);
``methods``   the methods, in the authors' settings and in the library's defaults;
``objective`` what is measured on a fitted method (MCC, dictionary MCC, MSE, L0, FLOPs);
``runner``    profiles, the command line, joblib sweeps, learning curves, JSON/PNG output
              and the summary table;
``plots``     the figure helpers.

Each experiment script (``benchmarks/fig*.py`` and friends) defines ``PROFILES``, a
``run(settings, n_jobs)`` returning plain records, ``figures(result)`` and ``summary(result)``,
and ends with ``runner.main(...)``.
"""
