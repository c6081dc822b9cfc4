"""The version of waitress_c, in one place.

The build reads it from here without importing the package
(``[tool.setuptools.dynamic]`` in pyproject.toml), so this module imports
nothing.
"""

__version__ = "0.1.0.dev0"
