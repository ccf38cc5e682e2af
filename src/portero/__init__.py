"""portero: keeps a web application up, fast and deployable on its own infrastructure."""

__version__ = "0.1.0"
