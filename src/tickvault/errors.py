"""The exceptions tickvault raises.

Every error is a ``TickvaultError``, so a caller can catch the whole family at once::

    TickvaultError
    ├── ConfigurationError      a setting or database URL tickvault cannot use
    ├── DatabaseError           the database refused or could not be reached
    │   ├── DatabaseUnavailable     unreachable, starting, locked: try again later
    │   │   └── WriteQueueFull      the live writer's queue is full: try again later
    │   ├── NotATickvaultDatabase   the database holds someone else's schema
    │   ├── ConflictError       a unique value already taken (a symbol, say)
    │   │   ├── KeyInFlight         an Idempotency-Key whose first request is still running
    │   │   └── LoadInProgress      another load of the same input moved its receipt
    │   └── StillReferenced     RESTRICT: the row still has children
    ├── NotFoundError           no such row (or it is soft-deleted)
    ├── ValidationError         input that cannot be stored, with the reason
    │   ├── TickRefused         the database itself refused one tick (a constraint, a trigger)
    │   └── KeyReused           an Idempotency-Key sent again with another request
    ├── MigrationError          a migration cannot run (unknown revision, data that would not fit)
    ├── ConfirmationRequired    it would destroy data: says what, and waits for a yes
    ├── NotAcceptable           an answer that cannot be given in the format asked for
    └── UnknownTableError       a table name that is not in the database's catalog

Database driver errors are translated at the boundary with ``raise ... from exc``, so the
original stays on ``__cause__``.
"""


class TickvaultError(Exception):
    """Root of every error tickvault raises on purpose."""


class ConfigurationError(TickvaultError):
    """A setting or a database URL that tickvault cannot use."""


class DatabaseError(TickvaultError):
    """The database refused an operation or could not be reached."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached, is starting up or stayed locked: nothing was written,
    and the same request may succeed later."""


class WriteQueueFull(DatabaseUnavailable):
    """The live writer's queue is full: nothing was queued; try again shortly."""


class NotATickvaultDatabase(DatabaseError):
    """The database holds tables but no tickvault revision, or a revision tickvault lacks."""


class MigrationError(TickvaultError):
    """A schema migration cannot run, and nothing was changed."""


class ConfirmationRequired(TickvaultError):
    """An operation would destroy data (a downgrade dropping tables or columns that hold
    rows, a large purge) and was not confirmed; the message says what, and nothing was
    changed. Commands that raise it take ``--yes``."""


class NotAcceptable(TickvaultError):
    """An answer that cannot be given in the format asked for (an HTTP ``Accept`` the API
    does not speak, Arrow output without pyarrow installed, a value Arrow cannot hold)."""


class UnknownTableError(TickvaultError):
    """A table name that the database's own catalog does not list."""


class NotFoundError(TickvaultError):
    """No row with that id, or only a soft-deleted one."""


class ValidationError(TickvaultError):
    """Input that cannot be stored; the message names the field and the reason."""


class TickRefused(ValidationError):
    """The database refused this one tick (its batch-mates were stored)."""


class ConflictError(DatabaseError):
    """A unique value is already taken."""


class KeyInFlight(ConflictError):
    """The first request with this Idempotency-Key has not been answered yet: try again
    once it has (nothing was stored for this one)."""


class LoadInProgress(ConflictError):
    """Another load of the same input moved its receipt: this one stopped, storing nothing
    twice."""


class KeyReused(ValidationError):
    """This Idempotency-Key was used for a different request (nothing was stored)."""


class StillReferenced(DatabaseError):
    """A delete refused by a RESTRICT foreign key: the row still has children."""
