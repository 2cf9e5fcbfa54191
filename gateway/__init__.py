"""bouncegw: an SMTP relay hop that explains Microsoft's 5.7.12-family bounces and records them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bouncegw")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
