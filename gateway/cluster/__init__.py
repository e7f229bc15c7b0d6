"""Several gateway nodes on one PostgreSQL queue (issue 18); see docs/design/scale-out-plan.md."""
