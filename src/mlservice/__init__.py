"""mlservice: a self-hosted, pay-per-prediction ML service."""

__version__ = "0.1.0"
