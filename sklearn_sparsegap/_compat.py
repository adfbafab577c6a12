"""The only module that imports scikit-learn private API.

Everything the library needs from scikit-learn's private modules is re-exported from here,
so a change in scikit-learn's internals is mended in one place.
"""

from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Hidden,
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_params,
)
from sklearn.utils.validation import validate_data

__all__ = [
    "HasMethods",
    "Hidden",
    "Interval",
    "InvalidParameterError",
    "StrOptions",
    "_fit_context",
    "validate_data",
    "validate_params",
]
