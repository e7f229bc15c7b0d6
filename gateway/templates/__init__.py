"""Message templates: versioned, per language, typed variables, lint, preview, A/B."""
