"""imageblur: a privacy-first image anonymization service."""

__version__ = "0.1.0"
