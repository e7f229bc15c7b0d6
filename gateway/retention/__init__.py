"""Retention of message contents and numbers (MSG-12), and erasure of one person (MSG-11)."""
