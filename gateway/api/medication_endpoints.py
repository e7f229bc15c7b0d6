"""The endpoint table's rows for results and medication (`gateway.api.medication`):
patients by MRN or number in the body, never in the path."""

from __future__ import annotations

from gateway.api import medication as med
from gateway.api.endpoint import INVALID_QUERY, Endpoint
from gateway.api.handlers import MAX_PAGE
from gateway.api.openapi import Answer, Query

_LIMIT = Query(
    "limit",
    f"page size, 1 to {MAX_PAGE}",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
)
_PATIENT_ERRORS = (
    Answer(404, "`unknown_patient`: no patient with this MRN from this source"),
    Answer(
        422,
        "`invalid_patient`: neither or both of `patient` and `number`; `invalid_number`"
        " (the number is never echoed)",
    ),
)
_NO_SCHEDULE = Answer(404, "`not_found`: no medication schedule with this id")
MEDICATION_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/v1/events/results-available",
        med.post_results_available,
        "send",
        "A lab without HL7: an order's results are final (or corrected); the patient gets"
        ' one "results are available" notice per order and status (never a value;'
        " audited). 200 with outcome `duplicate` when this order and status were seen",
        med.ResultsAvailableRequest,
        med.ResultsAvailableAnswer,
        201,
        answers=(
            Answer(
                200,
                "outcome `duplicate`: this order and status were seen; nothing planned",
                {"$ref": "#/components/schemas/ResultsAvailableAnswer"},
            ),
            *_PATIENT_ERRORS,
        ),
    ),
    Endpoint(
        "POST",
        "/api/v1/medications",
        med.post_medication,
        "send",
        "Create a medication schedule (doses at local times of day from a start to an end"
        " date, planned as notices ahead); 200 when `external_key` names one to change",
        med.MedicationRequest,
        med.MedicationView,
        201,
        idempotent=True,
        answers=(
            Answer(
                200,
                "the schedule of this `external_key`, changed (re-planned from now)",
                {"$ref": "#/components/schemas/MedicationView"},
            ),
            *_PATIENT_ERRORS,
            Answer(409, "`schedule_stopped`: this external key's schedule was stopped"),
            Answer(
                422,
                "`drug_names_not_allowed` (a `label` where medication.allow_drug_names is"
                " false), `time_zone_required`, `invalid_time_zone`, `invalid_dates`,"
                " `no_number` (the patient has no number to text)",
            ),
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/medications",
        med.list_medications,
        "read",
        "Medication schedules, newest first, with cursor paging (no PHI)",
        None,
        med.MedicationPage,
        query=(
            Query(
                "state",
                "schedule state",
                {"type": "string", "enum": ["active", "stopped", "ended"]},
            ),
            _LIMIT,
            Query(
                "cursor",
                "next_cursor of the previous page",
                {"type": "string", "pattern": f"^{med.CURSOR.pattern}$"},
            ),
        ),
        answers=(INVALID_QUERY,),
    ),
    Endpoint(
        "GET",
        f"/api/v1/medications/{med.SCHEDULE_ID}",
        med.get_medication,
        "read",
        "One medication schedule with its dose notices (no PHI)",
        None,
        med.MedicationView,
        answers=(_NO_SCHEDULE,),
    ),
    Endpoint(
        "DELETE",
        f"/api/v1/medications/{med.SCHEDULE_ID}",
        med.delete_medication,
        "send",
        "Stop a schedule: its pending dose notices are cancelled at once (audited)",
        None,
        med.MedicationView,
        answers=(_NO_SCHEDULE,),
    ),
)
