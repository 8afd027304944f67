"""The SDK's version, written here once: pyproject.toml reads it when the package is built,
and the User-Agent and `sharpness --version` import it from this leaf module (importing it
from the package's __init__ would run the whole SDK first)."""

__version__ = "0.2.0"
