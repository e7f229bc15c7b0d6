"""Contacts as an audience: attributes, groups, tags, CSV import, and who an audience is."""
