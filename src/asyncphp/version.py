"""The version: a module of its own, so that everything can say it without importing the package's face."""

__version__ = "0.1.0"
