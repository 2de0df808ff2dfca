"""The approvals admin: the proposal queue and decision page, the autonomy report, and the way back (rollback)."""

from approvals.admin import proposals, rollback

__all__ = ["proposals", "rollback"]
