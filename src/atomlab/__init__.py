"""atomlab: run a scanning-probe lab with software agents."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("atomlab")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
