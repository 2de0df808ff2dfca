"""The approvals admin: the proposal queue and page, the autonomy report, the way back (rollback), delegations."""

from approvals.admin import delegations, proposals, rollback

__all__ = ["delegations", "proposals", "rollback"]
