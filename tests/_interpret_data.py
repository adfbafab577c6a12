"""Synthetic activation sets with latents whose meaning is known (shared by the
interpretability tests)."""

import numpy as np

VOCAB_SIZE = 200
VOCAB = [f" w{i}" for i in range(VOCAB_SIZE)]
TOKEN_LATENT, BIGRAM_LATENT, RANDOM_LATENT, DEAD_LATENT, TIED_LATENT = range(5)
FIRES_ON, BIGRAM, TIED_ON = 7, (3, 5), 9


def make_tokens(n_documents=200, length=64, seed=0):
    """Random tokens with the planted token and bigram, and the bigram's last token
    planted alone as often (so the single token is not a precise explanation)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(20, VOCAB_SIZE, size=(n_documents, length))
    for _ in range(150):
        d, p = rng.integers(n_documents), rng.integers(1, length)
        tokens[d, p] = FIRES_ON
    for _ in range(150):
        d, p = rng.integers(n_documents), rng.integers(1, length)
        tokens[d, p - 1 : p + 1] = BIGRAM
    for _ in range(150):
        d, p = rng.integers(n_documents), rng.integers(1, length)
        if tokens[d, p - 1] != BIGRAM[0]:
            tokens[d, p] = BIGRAM[1]
    for _ in range(80):
        d, p = rng.integers(n_documents), rng.integers(1, length)
        tokens[d, p] = TIED_ON
    metadata = {
        "document": np.repeat(np.arange(n_documents), length),
        "position": np.tile(np.arange(length), n_documents),
        "token": tokens.ravel(),
    }
    return metadata


def make_activations(metadata, seed=0):
    """Features: token one-hot, previous-token one-hot (0 at a document start), a
    uniform magnitude and a random firing indicator."""
    rng = np.random.default_rng(seed)
    token = metadata["token"]
    previous = np.r_[-1, token[:-1]]
    previous[np.r_[True, metadata["document"][1:] != metadata["document"][:-1]]] = -1
    n = len(token)
    X = np.zeros((n, 2 * VOCAB_SIZE + 2))
    X[np.arange(n), token] = 1.0
    has_previous = previous >= 0
    X[np.flatnonzero(has_previous), VOCAB_SIZE + previous[has_previous]] = 1.0
    X[:, -2] = rng.uniform(size=n)
    X[:, -1] = rng.uniform(size=n) < 0.03
    return X


class KnownLatents:
    """A fitted-encoder stand-in whose five latents fire on a known token, a known
    bigram, at random, never, and on a token with one tied value."""

    def __init__(self, n_features=2 * VOCAB_SIZE + 2, seed=0):
        rng = np.random.default_rng(seed)
        components = rng.normal(size=(5, n_features))
        self.components_ = components / np.linalg.norm(components, axis=1, keepdims=True)

    def transform(self, X):
        X = np.asarray(X)
        magnitude = 1.0 + X[:, -2]
        codes = np.zeros((len(X), 5))
        codes[:, TOKEN_LATENT] = X[:, FIRES_ON] * magnitude
        codes[:, BIGRAM_LATENT] = (
            X[:, BIGRAM[1]] * X[:, VOCAB_SIZE + BIGRAM[0]] * magnitude
        )
        codes[:, RANDOM_LATENT] = X[:, -1] * magnitude
        codes[:, TIED_LATENT] = X[:, TIED_ON] * 1.0
        return codes
