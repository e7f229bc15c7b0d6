"""Results-available notices: ORU^R01 (OBR-25 final or corrected) and the JSON API's
`POST /events/results-available` become one "your results are available" notice per
order and status, never carrying a value. Also the clinical events table and the
`[results]` / `[medication]` settings both parts read."""
