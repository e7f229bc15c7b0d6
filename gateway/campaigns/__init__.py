"""Campaigns: one text (a template with its A/B variants, or free text) to an audience,
fed into the queue at a rate, through the same accept path and send policy as any
message (issue 15, points 2 and 3)."""
