"""The web UI: server-rendered pages over the same services as the API, every asset served locally."""
