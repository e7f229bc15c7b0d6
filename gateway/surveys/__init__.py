"""SMS surveys (issue 15, point 5): short question flows answered by text.

`spec` (what a survey is), `answers` (an answer's verdict, pure), `flow` (what comes
after an answer, pure), `sql` (its SQL), `inbound` (answers matched in the inbound
transaction), `usecase` (what front ends call), `runner` (time-outs), `results`
(counts, charts, CSV)."""
