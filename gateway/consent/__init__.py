"""Consent and send policy: purposes, the consent ledger, keywords, quiet hours, caps."""
