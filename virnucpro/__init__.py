"""virnucpro: the VirNucPro viral sequence identifier as a fast, resumable GPU batch job."""

__version__ = "0.1.0"
