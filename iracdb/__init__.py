"""iracdb: a database-backed reduction archive for Spitzer/IRAC Level-1 aperture photometry.

Importing the package does no I/O and opens no database.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
