"""The session class: soft-deleted rows are left out of every default read.

Selects, ``session.get()`` and relationship loads all skip rows whose ``deleted_at`` is set
(``with_loader_criteria``, after SQLAlchemy's ``filter_public`` recipe). Opt in per statement::

    select(MarketData).execution_options(include_deleted=True)
    session.get(MarketData, 7, execution_options={"include_deleted": True})
"""

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from tickvault.database.mixins import SoftDeleteMixin

INCLUDE_DELETED = "include_deleted"


class TickvaultSession(Session):
    """A ``Session`` whose default reads hide soft-deleted rows."""

    def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
        # An object already in the identity map comes back without a SELECT, so the
        # loader criteria never see it: check it here.
        instance = super().get(entity, ident, **kwargs)
        options = kwargs.get("execution_options") or {}
        if (
            isinstance(instance, SoftDeleteMixin)
            and instance.deleted_at is not None
            and not options.get(INCLUDE_DELETED, False)
        ):
            return None
        return instance


@event.listens_for(TickvaultSession, "do_orm_execute")
def _hide_soft_deleted(state: ORMExecuteState) -> None:
    if (
        state.is_select
        and not state.is_column_load
        and not state.is_relationship_load
        and not state.execution_options.get(INCLUDE_DELETED, False)
    ):
        state.statement = state.statement.options(
            with_loader_criteria(
                SoftDeleteMixin,
                lambda cls: cls.deleted_at.is_(None),
                include_aliases=True,
            )
        )
