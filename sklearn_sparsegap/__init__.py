"""sklearn-sparsegap: sparse autoencoders, iterative sparse coding and the amortisation gap.

scikit-learn estimators on PyTorch (CPU or CUDA) for the experiments of *Compute Optimal
Inference and Provable Amortisation Gap in Sparse Autoencoders* (O'Neill, Gumran, Klindt).
"""

from ._baselines import LarsDictionaryLearning
from ._datasets import make_sparse_dictionary_data
from ._ito import SAEPlusITO
from ._metrics import (
    dead_fraction,
    dictionary_mcc,
    make_dictionary_mcc_scorer,
    mcc_scorer,
    mean_corr_coef,
    mean_l0,
    normalized_mse,
    paper_l1_to_alpha,
)
from ._sae import MLPEncoder, SAEEncoder
from ._solvers import sparse_encode
from ._sparse_coding import GradientSparseCoder
from ._transcoder import SAETranscoder
from ._version import __version__

__all__ = [
    "GradientSparseCoder",
    "LarsDictionaryLearning",
    "MLPEncoder",
    "SAEEncoder",
    "SAEPlusITO",
    "SAETranscoder",
    "__version__",
    "dead_fraction",
    "dictionary_mcc",
    "make_dictionary_mcc_scorer",
    "make_sparse_dictionary_data",
    "mcc_scorer",
    "mean_corr_coef",
    "mean_l0",
    "normalized_mse",
    "paper_l1_to_alpha",
    "sparse_encode",
]
