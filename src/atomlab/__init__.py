"""atomlab: run a scanning-probe lab with software agents."""

__version__ = "0.1.0"
"""The package version, written here rather than read from the installed metadata: reading it
(importlib.metadata) costs about 25 ms at every start of the command line. It must equal the
version in pyproject.toml; tests/cli/test_startup.py checks that they agree."""

__all__ = ["__version__"]
