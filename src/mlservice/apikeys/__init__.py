"""API keys: long-lived bearer credentials for programs, stored only as hashes."""
