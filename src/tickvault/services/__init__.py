"""Services: what the CLI and the HTTP API call."""
