"""The ``mlservice`` command-line client: log in once, then run models from a shell.

It talks to a server over its HTTP API only (httpx), with an API key kept in a per-user file.
"""
