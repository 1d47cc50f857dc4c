"""tickvault's Alembic environment and revisions (one chain, both engines)."""
