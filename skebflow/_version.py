"""The version of skebflow (one place: the package, ``pyproject.toml`` and model files read it)."""

__version__ = "0.1.0.dev0"
