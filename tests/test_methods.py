"""The one definition of every compared method (``experiments._methods``) and its steps."""

import numpy as np
import pytest

from sklearn_sparsegap import GradientSparseCoder, MLPEncoder, SAEEncoder, SAEPlusITO
from sklearn_sparsegap.experiments._methods import (
    PAPER_ITO_ITER,
    PAPER_LEARNING_RATE,
    SYNTHETIC_ITO_ALPHA_FRACTION,
    _check_method,
    _encoder_params,
    _ito_method,
    build_method,
    paper_alpha,
)


@pytest.mark.parametrize("args, message", [
    (("svd", "unknown", "library", None), "method must be one of"),
    (("sae", "known-nothing", "library", None), "scenario must be one of"),
    (("sae", "unknown", "authors", None), "flavour must be one of"),
    (("lars", "known-codes", "library", None), "cannot run the known-codes"),
    (("sae", "known-dictionary", "library", None), "needs the dictionary"),
])  # fmt: skip
def test_check_method_names_the_bad_argument(args, message):
    with pytest.raises(ValueError, match=message):
        _check_method(*args)


def test_encoder_params_by_method_scenario_and_flavour():
    assert _encoder_params("sae", "unknown", 3, paper=False, alpha=0.1) == {}
    assert _encoder_params("topk-sae", "unknown", 3, paper=False, alpha=0.1) == {
        "activation": "topk", "n_nonzero_coefs": 3,
    }  # fmt: skip
    codes = _encoder_params("mlp", "known-codes", 3, paper=True, alpha=0.1)
    assert codes["target"] == "codes" and codes["alpha"] == 0.1
    assert codes["fit_intercept"] is True and codes["rescale_codes"] is False
    assert codes["learning_rate"] == PAPER_LEARNING_RATE and codes["scale_input"] is False
    assert _encoder_params("sae", "unknown", 3, paper=True, alpha=0.1)["fit_intercept"] is False


def test_ito_method_recipe_and_overrides():
    encoder = SAEEncoder(alpha=0.4)
    library = _ito_method(encoder, paper=False, alpha=0.01, device="cpu", ito=None)
    assert isinstance(library, SAEPlusITO) and library.encoder is encoder
    assert library.transform_algorithm == "fista" and library.guard == "objective"
    assert library.transform_alpha == pytest.approx(SYNTHETIC_ITO_ALPHA_FRACTION * 0.4)
    paper = _ito_method(encoder, paper=True, alpha=0.01, device="cpu", ito={"tol": 0.5})
    assert paper.transform_algorithm == "adam" and paper.transform_alpha == 0.01
    assert paper.transform_max_iter == PAPER_ITO_ITER and paper.tol == 0.5


def test_build_method_gives_each_family_its_estimator():
    kwargs = dict(n_components=16, n_features=8, n_nonzero_coefs=3)
    assert isinstance(build_method("mlp", **kwargs), MLPEncoder)
    coder = build_method("sparse-coding", flavour="paper", max_iter=5, **kwargs)
    assert isinstance(coder, GradientSparseCoder) and coder.fit_algorithm == "adam"
    assert coder.max_iter == 5 and coder.alpha == paper_alpha(8, 16)
    D = np.eye(16, 8)
    known = build_method("sae+ito", scenario="known-dictionary", dictionary=D, max_iter=9,
                         **kwargs)  # fmt: skip
    # SAE+ITO's budget is its encoder's.
    assert known.encoder.max_iter == 9 and known.encoder.dictionary is D
    lars = build_method("lars", max_iter=4, **kwargs)
    assert lars.max_iter == 4 and lars.n_components == 16
