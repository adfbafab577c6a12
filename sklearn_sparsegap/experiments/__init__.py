"""The experiments the ``sparsegap`` command runs, one module each.

- ``_methods``: the one definition of every compared method (:func:`build_method` for
  the synthetic tasks, :func:`build_activation_method` for real activations).
- ``_compare``: ``sparsegap compare``, every method on the paper's synthetic task.
- ``_activations`` (and ``_activations_interpret``): ``sparsegap activations``, the
  paper's §5 on a real model, with the optional interpretability step.
- ``_gap``: ``sparsegap gap``, any trained SAE's amortisation gap closed by ITO
  (:func:`amortisation_gap_report`).
- ``_report``: progress lines shared by the experiments.

Experiments build on the estimators and on :mod:`sklearn_sparsegap.activations` (data,
storage, models, real-data metrics); nothing below imports them.
"""

from ._gap import amortisation_gap_report

__all__ = ["amortisation_gap_report"]
