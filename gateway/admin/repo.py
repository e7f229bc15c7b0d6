"""Kept only so gateway/integrations/kannel_server.py (another branch's package) still
imports `AdminRepo` from here; remove at merge, with that import changed to
`gateway.store.panel_sql` (or `gateway.admin_repo`). The panel itself imports nothing
from the store: its records are `gateway/panel_users.py`."""

from gateway.store.panel_sql import AdminRepo

__all__ = ["AdminRepo"]
