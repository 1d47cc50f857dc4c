"""Database plumbing: the declarative base, column types, mixins, engines and sessions."""
