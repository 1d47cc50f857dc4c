"""tickvault's HTTP API: ``create_app()`` builds it (FastAPI; OpenAPI at /docs)."""

from tickvault.api.app import create_app

__all__ = ["create_app"]
