"""The package version, in a leaf module so that nothing inside imports the package root."""

__version__ = "0.2.0"
