"""Repositories: reads and writes per model. They never commit; the caller's unit of work
(a session from ``create_session_factory``) owns the transaction."""
