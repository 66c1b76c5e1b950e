"""The request history: one row per prediction request, accepted or refused, for administrators."""
