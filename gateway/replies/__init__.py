"""Patients' replies to appointment texts: C / Y confirm, R asks to reschedule, N asks
to cancel, `STOP 1234` stops one appointment's texts; matched to the latest reminded
appointment of the number (or the one its short code names), written back to the EHR
per the appointment's interface profile or put on the staff worklist, and reported as
an `appointment.reply` event. Decided in the inbound message's own transaction,
after the consent keywords (`gateway.consent.inbound`) had their say."""
