"""Clinical messaging: HL7 v2 feeds and the JSON API turned into appointments, patients,
results and medication events, and those into timed notices (reminders, "your
appointment moved", "results are available"), with replies written back to the EHR.

The contract between its parts is `CONTRACT.md`: mappers are pure functions from a
parsed HL7 message to commands; a command applies itself inside the writer's
transaction; notices are rows that one runner renders and sends when due.
"""
