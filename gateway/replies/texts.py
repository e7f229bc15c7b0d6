"""What the gateway texts back to a reply, per language (GSM 7-bit, one SMS each).

`{program}` is the program's title as the consent replies use it. Unmatched and
unclear replies get no answer: staff read them, and a guess would mislead.
"""

from __future__ import annotations

import enum


class Answer(enum.StrEnum):
    CONFIRMED = "confirmed"
    RESCHEDULE = "reschedule_requested"
    CANCEL = "cancel_requested"
    CANCELLED = "cancelled"
    STOPPED = "opted_out"


TEXTS: dict[str, dict[Answer, str]] = {
    "en": {
        Answer.CONFIRMED: "{program}: Thanks, your appointment is confirmed.",
        Answer.RESCHEDULE: "{program}: Thanks, we got your request to change your"
        " appointment. The clinic will contact you.",
        Answer.CANCEL: "{program}: Thanks, we got your request to cancel your appointment."
        " The clinic will contact you.",
        Answer.CANCELLED: "{program}: Your appointment is cancelled. Please call the clinic"
        " to book again.",
        Answer.STOPPED: "{program}: You will get no more texts about this appointment."
        " Reply STOP to stop all texts.",
    },
    "es": {
        Answer.CONFIRMED: "{program}: Gracias, su cita esta confirmada.",
        Answer.RESCHEDULE: "{program}: Gracias, recibimos su pedido de cambiar la cita."
        " La clinica le llamara.",
        Answer.CANCEL: "{program}: Gracias, recibimos su pedido de cancelar la cita."
        " La clinica le llamara.",
        Answer.CANCELLED: "{program}: Su cita esta cancelada. Llame a la clinica para"
        " una nueva cita.",
        Answer.STOPPED: "{program}: No recibira mas mensajes sobre esta cita."
        " Responda ALTO para no recibir ningun mensaje.",
    },
}


def render(answer: Answer, language: str | None, program_title: str) -> str:
    code = (language or "en").split("-")[0].split("_")[0].lower()
    texts = TEXTS.get(code, TEXTS["en"])
    return texts[answer].replace("{program}", program_title)
