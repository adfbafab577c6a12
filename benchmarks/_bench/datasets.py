"""The experiments' data: the paper's generator, split into train and test halves."""

from dataclasses import dataclass

import numpy as np

from sklearn_sparsegap import make_sparse_dictionary_data

# The code distributions of the generator (the dataset's parameter): |N(0,1)| as in the
# authors' code, signed N(0,1), and the paper's App. D Zipf generator.
DISTRIBUTIONS = ("halfnormal", "normal", "zipf")
# The authors' base seeds: known codes and known dictionary use 20240625, the
# unknown-dictionary, Pareto, top-k and ablation runs 20240926, the regime sweep 20240927.
# Run i uses base + i for the data and for the model.
SEED_KNOWN = 20240625
SEED_UNKNOWN = 20240926
SEED_REGIMES = 20240927


@dataclass(frozen=True)
class Task:
    """One dataset: training and test signals, their true codes and the dictionary.

    Signals are float32 (like model activations and the authors' torch code); codes and
    the dictionary stay float64 for the metrics.
    """

    X_train: np.ndarray
    X_test: np.ndarray
    codes_train: np.ndarray
    codes_test: np.ndarray
    dictionary: np.ndarray
    seed: int
    distribution: str

    @property
    def n_components(self):
        return self.dictionary.shape[0]

    @property
    def n_features(self):
        return self.dictionary.shape[1]

    @property
    def n_nonzero_coefs(self):
        return int(np.count_nonzero(self.codes_train[0]))

    def describe(self):
        """The settings that identify this task, for the JSON records."""
        return {
            "n_components": self.n_components,
            "n_features": self.n_features,
            "n_nonzero_coefs": self.n_nonzero_coefs,
            "n_train": len(self.X_train),
            "n_test": len(self.X_test),
            "distribution": self.distribution,
            "data_seed": self.seed,
        }


def make_task(
    n_components=16,
    n_features=8,
    n_nonzero_coefs=3,
    *,
    n_train=1024,
    n_test=1024,
    distribution="halfnormal",
    seed=SEED_UNKNOWN,
):
    """Generate ``n_train + n_test`` samples and split them as the authors do (first half
    train, second half test); ``distribution`` is one of ``DISTRIBUTIONS``."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}.")
    X, dictionary, codes = make_sparse_dictionary_data(
        n_train + n_test,
        n_components=n_components,
        n_features=n_features,
        n_nonzero_coefs=n_nonzero_coefs,
        code_distribution=distribution,
        random_state=seed,
    )
    X = X.astype(np.float32)
    return Task(
        X_train=X[:n_train],
        X_test=X[n_train:],
        codes_train=codes[:n_train],
        codes_test=codes[n_train:],
        dictionary=dictionary,
        seed=seed,
        distribution=distribution,
    )


def split_task(settings, base_seed, seed, distribution="halfnormal"):
    """The paper's N=16, M=8, K=3 task of ``settings["n_train"]`` training and as many test
    samples, drawn with seed ``base_seed + seed``."""
    return make_task(
        n_train=settings["n_train"], n_test=settings["n_train"], seed=base_seed + seed,
        distribution=distribution,
    )  # fmt: skip
