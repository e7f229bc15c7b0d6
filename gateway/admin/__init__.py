"""The admin panel's security core: accounts, sessions, CSRF, headers, audit trail.

`routing.py` declares the panel's routes (`PanelRoute`); `panel.py` registers them
behind one gate (session, role, CSRF, headers) derived from that table.
"""
