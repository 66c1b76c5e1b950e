"""Files uploaded for later predictions (`POST /v1/files`), kept for a day."""
