"""Tracked links: named destinations on an allowlist, a per-message short URL on the
hospital's own host at accept, and a redirect listener that counts people, not bots."""
