"""Analytics without PHI (issue 15, point 7): daily sums per campaign, template variant,
reminder rule, clinic, purpose and route, kept up to date incrementally.

- `days.py`: instants to the site's local days, and a day range's edges.
- `figures.py`: the dimensions and metrics stored, and the figures read from them.
- `streams.py`: what is read from each source after its cursor, and how it is counted.
- `rollup.py`: the task that folds new rows into the sums, one batch per transaction.
- `report.py`: sums over a date range, per dimension or per day (reads only the sums).
- `usecase.py`: what the API, the panel and the console call (`Analytics`).
"""
