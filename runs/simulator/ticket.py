"""Reading a support ticket the way the simulated agent does: ids, intent, tone, tricks.

The first user message is the ticket, rendered as::

    Ticket T-0007 from jane@example.com
    Subject: Refund for damaged mug

    <body>

Everything here is keyword matching over English, German, French and Spanish: crude on
purpose, fully deterministic, and good enough to give the runtime plausible traffic.
Injected instructions are *detected* (so the agent hands the ticket off) and never obeyed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

ORDER_ID_RE = re.compile(r"\bSO-\d{4}\b")
_HEADER_RE = re.compile(r"Ticket\s+(T-\d+)\s+from\s+(\S+@[^\s,;]+)", re.IGNORECASE)
_TICKET_ID_RE = re.compile(r"\bT-\d+\b")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_SUBJECT_RE = re.compile(r"^Subject:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
_DATE_RE = re.compile(
    r"\b(?:date|today is|today's date is|as of)\s*:?\s*(\d{4}-\d{2}-\d{2})", re.IGNORECASE
)
_NUMBER = r"(\d{1,7}(?:[.,]\d{1,2})?)"
_BARE_NUMBER_RE = re.compile(r"(?<![\w.,-])" + _NUMBER + r"(?![\w-]|[.,]\d)")
_AMOUNT_RES = (
    re.compile(r"(?:€|\$|£|\beur\b|\busd\b|\bgbp\b)\s?" + _NUMBER, re.IGNORECASE),
    re.compile(_NUMBER + r"\s?(?:€|\$|£|eur\b|euros?\b|usd\b|dollars?\b|gbp\b)", re.IGNORECASE),
    re.compile(r"\brefund(?:\s+me)?(?:\s+of)?\s+" + _NUMBER + r"\b", re.IGNORECASE),
)


class Intent(StrEnum):
    """What the customer wants, as far as keywords can tell."""

    REFUND = "refund"
    CANCEL = "cancel"
    STATUS = "status"
    OTHER = "other"


def _stems(*stems: str) -> re.Pattern[str]:
    # A stem matches at the start of a word: "refund" matches "refunded", not "prefund".
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(s) for s in stems) + ")", re.IGNORECASE)


_DAMAGED = _stems(
    *("damaged", "broke", "defective", "cracked", "faulty", "shattered"),
    *("beschädigt", "kaputt", "defekt", "zerbrochen", "gebrochen"),
    *("endommag", "cassé", "brisé", "défectueu", "abîmé"),
    *("dañad", "roto", "rota", "defectuos", "estropead"),
)
_REFUND = _stems(
    *("refund", "money back", "reimburs", "return"),
    *("erstatt", "rückerstatt", "geld zurück", "rücksend", "zurückschick", "zurückgeb"),
    *("rembours", "retour", "renvoy"),
    *("reembols", "devolu", "devolv", "mi dinero"),
)
_CANCEL = _stems("cancel", "storn", "annul", "cancela", "anula")
_STATUS = _stems(
    *("where is", "where's", "track", "status", "not arrived", "hasn't arrived", "not received"),
    *("still waiting", "when will"),
    *("wo ist", "wo bleibt", "sendungsverfolgung", "nicht angekommen", "noch nicht erhalten"),
    *("où est", "suivi", "pas reçu", "pas encore reçu", "toujours pas"),
    *("dónde está", "donde esta", "seguimiento", "no ha llegado", "no he recibido", "estado"),
)
_INJECTION = re.compile(
    "|".join(
        (
            r"\bignore\s+(?:all\s+|any\s+|the\s+|your\s+)*(?:previous|prior|above|earlier|"
            r"preceding)?\s*(?:instructions|rules|prompts?)",
            r"\bdisregard\s+(?:all\s+|any\s+|the\s+|your\s+)*(?:previous\s+|prior\s+|above\s+)?"
            r"(?:instructions|rules|guidelines)",
            r"(?:^|\n)\s*(?:system|assistant|developer)\s*:",
            r"\bsystem\s*:\s*\w",
            r"\bconfidence\s*[:=]\s*[01]?\.?\d",
            r"\bskip\s+(?:the\s+)?review",
            r"\byou\s+are\s+now\b",
            r"\bdeveloper\s+mode\b",
            r"\bjailbreak",
            r"\bignoriere\s+(?:alle\s+)?(?:vorherigen\s+)?anweisungen",
            r"\bignorez\s+(?:toutes\s+)?(?:les\s+)?instructions",
            r"\bignora\s+(?:todas\s+)?(?:las\s+)?instrucciones",
        )
    ),
    re.IGNORECASE,
)
_THREATS = _stems(
    *("lawyer", "attorney", "sue ", "in court", "chargeback", "scam", "fraud"),
    *("anwalt", "klage", "betrug", "avocat", "tribunal", "arnaque", "abogado", "demanda", "estafa"),
)
_LANGUAGE_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        ("the", "and", "my", "is", "please", "order", "not", "hi", "hello", "thanks", "was", "it")
    ),
    "de": frozenset(
        (
            "und",
            "ich",
            "meine",
            "bitte",
            "nicht",
            "die",
            "der",
            "das",
            "ist",
            "bestellung",
            "hallo",
            "danke",
        )
    ),
    "fr": frozenset(
        ("je", "et", "mon", "ma", "bonjour", "commande", "pas", "est", "les", "merci", "une")
    ),
    "es": frozenset(
        ("hola", "mi", "pedido", "por", "favor", "gracias", "el", "la", "no", "está", "es", "una")
    ),
}


@dataclass(frozen=True)
class Ticket:
    """What the agent reads out of the customer's messages."""

    ticket_id: str | None
    email: str | None
    subject: str
    body: str
    order_ids: tuple[str, ...]
    intent: Intent
    damaged: bool
    language: str
    injection: bool
    very_angry: bool
    stated_amount: Decimal | None
    reference_date: str | None

    @property
    def order_id(self) -> str | None:
        """The first order id the customer mentions, if any."""
        return self.order_ids[0] if self.order_ids else None


def parse_ticket(text: str) -> Ticket:
    """Parse the rendered ticket (plus any later customer messages) into a Ticket."""
    header = _HEADER_RE.search(text)
    subject_match = _SUBJECT_RE.search(text)
    subject = subject_match.group(1).strip() if subject_match else ""
    body = text[subject_match.end() :].strip() if subject_match else text.strip()
    if header:
        email: str | None = header.group(2).rstrip(".")
    else:
        found = _EMAIL_RE.search(text)
        email = found.group(0) if found else None
    both = f"{subject}\n{body}"
    return Ticket(
        ticket_id=header.group(1) if header else _first(_TICKET_ID_RE, text),
        email=email,
        subject=subject,
        body=body,
        order_ids=tuple(dict.fromkeys(ORDER_ID_RE.findall(text))),
        intent=detect_intent(both),
        damaged=bool(_DAMAGED.search(both)),
        language=detect_language(both),
        injection=bool(_INJECTION.search(both)),
        very_angry=is_very_angry(both),
        stated_amount=stated_amount(both),
        reference_date=reference_date(text),
    )


def detect_intent(text: str) -> Intent:
    """Cancel beats refund beats status: "cancel and refund" is a cancellation first."""
    if _CANCEL.search(text):
        return Intent.CANCEL
    if _REFUND.search(text) or _DAMAGED.search(text):
        return Intent.REFUND
    if _STATUS.search(text):
        return Intent.STATUS
    return Intent.OTHER


def detect_language(text: str) -> str:
    """The language whose common words appear most often; English on a tie."""
    words = re.findall(r"\w+", text.lower())
    scores = {lang: sum(w in vocab for w in words) for lang, vocab in _LANGUAGE_WORDS.items()}
    best = max(scores, key=lambda lang: (scores[lang], lang == "en"))
    return best


def is_very_angry(text: str) -> bool:
    """Shouting (mostly capitals) or threats of lawyers and chargebacks."""
    if _THREATS.search(text):
        return True
    words = re.findall(r"[^\W\d_]{3,}", ORDER_ID_RE.sub(" ", text))
    shouted = [w for w in words if w.isupper()]
    return len(shouted) >= 4 and len(shouted) * 2 >= len(words)


def stated_amount(text: str) -> Decimal | None:
    """The first money amount the customer states, ignoring order and ticket ids."""
    cleaned = _TICKET_ID_RE.sub(" ", ORDER_ID_RE.sub(" ", text))
    hits = [m for pattern in _AMOUNT_RES for m in pattern.finditer(cleaned)]
    if not hits:
        return None
    first = min(hits, key=lambda m: m.start())
    try:
        return Decimal(first.group(1).replace(",", ".")).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None


def feedback_amount(text: str) -> Decimal | None:
    """An amount a reviewer names: "refund only 20", "max 15,50 EUR"."""
    amount = stated_amount(text)
    if amount is not None:
        return amount
    cleaned = _TICKET_ID_RE.sub(" ", ORDER_ID_RE.sub(" ", text))
    bare = _BARE_NUMBER_RE.search(cleaned)
    if bare is None:
        return None
    return Decimal(bare.group(1).replace(",", ".")).quantize(Decimal("0.01"))


def reference_date(text: str) -> str | None:
    """A "today" date stated in the text (``Date: 2025-06-01``), for judging order age."""
    found = _DATE_RE.search(text)
    return found.group(1) if found else None


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.search(text)
    return found.group(0) if found else None
