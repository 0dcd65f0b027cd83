"""Query refinement: the contract shared by the serving stage and the refiner's training.

The refiner model sees ``refiner_messages(conversation)`` and answers with the rewritten
latest user turn only. Serving (``app/refiner.py``) and training (``finetune/refine_*``,
``guide-align refine sft|rl``) both build prompts with ``refiner_messages`` and accept outputs
with ``check_refined`` (after ``clean_refined``), so what the refiner is trained on is what it
is asked at serving time.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from guide.views import normalise_roles
from retriever.query import message_text

REFINE_MODES = ("off", "retrieve", "auto", "rewrite")  # tighter to the right

# Outcomes of one refinement, counted in guide_align_refinement_events_total{outcome}.
# "length": far longer than the original; "answer": reads as an answer to the request, not as
# a rewrite of it (a small refiner often answers instead).
OUTCOMES = ("refined", "unchanged", "skipped", "empty", "refusal", "answer", "language",
            "length", "failed", "timeout")

SYSTEM = ("Rewrite the user's latest request so it is clear, specific and safe. Keep its "
          "intent and every constraint, use the same language, and do not answer it. "
          "Output only the rewritten request.")
# Earlier turns given as context: the last few, each clipped (the refiner's context is small).
CONTEXT_TURNS = 4
CONTEXT_CHARS = 300
# An output longer than this is not a rewrite of the original.
MAX_GROWTH = 4
MAX_EXTRA_CHARS = 200


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def latest_user_index(conversation: Sequence[dict[str, Any]]) -> int:
    """Index of the latest user turn with text (roles normalised); -1 when there is none."""
    messages = normalise_roles(conversation)
    for n in range(len(messages) - 1, -1, -1):
        m = messages[n]
        if (isinstance(m, dict) and m.get("role") == "user"
                and message_text(m.get("content")).strip()):
            return n
    return -1


def refiner_messages(conversation: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat prompt sent to the refiner for a conversation's latest user turn.

    One system instruction, then one user message: the earlier user and assistant turns as
    compact context (system messages are the operator's and are left out), then the request.
    Raises ``ValueError`` when the conversation has no user turn with text.
    """
    messages = normalise_roles(conversation)
    last = latest_user_index(messages)
    if last < 0:
        raise ValueError("the conversation has no user turn to refine")
    request = message_text(messages[last].get("content")).strip()
    context = []
    for m in messages[:last]:
        role = m.get("role") if isinstance(m, dict) else None
        text = message_text(m.get("content")).strip() if role in ("user", "assistant") else ""
        if text:
            context.append(f"{'User' if role == 'user' else 'Assistant'}: "
                           f"{_clip(text, CONTEXT_CHARS)}")
    context = context[-CONTEXT_TURNS:]
    user = (f"Conversation so far:\n{chr(10).join(context)}\n\nRequest to rewrite:\n{request}"
            if context else request)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


# Openings of a refusal or an assistant's answer instead of a rewritten request.
_REFUSAL = re.compile(
    r"^\W*(i\s*(?:'|’)?\s*m\s+sorry|i\s+am\s+sorry|sorry,|i\s+(?:can\s*(?:'|’)?\s*t|cannot|"
    r"can\s+not|won\s*(?:'|’)?\s*t|will\s+not|am\s+unable|(?:'|’)m\s+unable|"
    r"am\s+not\s+able)\s+(?:help|assist|provide|do|comply|rewrite|fulfil|support)|"
    r"as\s+an\s+ai\b|as\s+a\s+language\s+model|i\s*(?:'|’)?\s*m\s+not\s+able\s+to|"
    r"i\s+must\s+decline|"
    r"lo\s+siento|no\s+puedo\s+(?:ayudar|asistir|proporcionar)|como\s+(?:una\s+)?ia\b|"
    r"je\s+suis\s+d[ée]sol[ée]|je\s+ne\s+peux\s+pas|en\s+tant\s+qu\s*(?:'|’)\s*ia\b|"
    r"es\s+tut\s+mir\s+leid|ich\s+kann\s+(?:dir|ihnen|da)\s+nicht|als\s+ki\b|"
    r"mi\s+dispiace|non\s+posso\s+(?:aiutar|fornir)|"
    r"desculpe|sinto\s+muito|n[ãa]o\s+posso\s+(?:ajudar|fornecer))",
    re.IGNORECASE)

# Openings of an answer: "Sure", "Here are", "To do that, you can", "You can", "Hello",
# "I'm glad" ...
_ANSWER = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"^\W*(?:sure|certainly|of\s+course|absolutely|great\s+question)\b",
    r"^\W*here\s*(?:'|’)?\s*(?:s|is|are)\s+(?:how\b|some\b|a\s+few\b|\d|(?:a|an|the)\s+"
    r"(?:list|summary|poem|story|answer|example|guide|steps?|few|short|brief)\b)",
    r"^\W*to\s+[^,.\n]{1,80},\s*(?:you|we|one)\s+(?:can|could|should|need|must|will)\b",
    r"^\W*(?:you|one)\s+(?:can|could|should|need\s+to|might|may)\b",
    r"^\W*(?:hello|hi|hey|thank\s+you|thanks)\b",
    r"^\W*i\s*(?:(?:'|’)?\s*m|am|(?:'|’)?\s*d\s+be|would\s+be)\s+(?:glad|happy|delighted|"
    r"here)\b",
))
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+", re.MULTILINE)
_LIST_ITEMS = 3  # a list this long where the original had none: an answer's steps
_EXTRA_LINES = 3  # more lines than the original by this many: an answer, not a request


def _lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def _answer_like(original: str, refined: str) -> bool:
    if any(p.search(refined) and not p.search(original) for p in _ANSWER):
        return True
    if len(_LIST_ITEM.findall(refined)) >= _LIST_ITEMS and not _LIST_ITEM.search(original):
        return True
    return _lines(refined) >= _lines(original) + _EXTRA_LINES


# Scripts told apart by the first word of a character's Unicode name.
_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK", "ARABIC", "HEBREW", "DEVANAGARI", "HANGUL", "THAI",
            "CJK", "HIRAGANA", "KATAKANA", "BENGALI", "TAMIL", "GEORGIAN", "ARMENIAN")
_SCRIPT_GROUP = {"HIRAGANA": "JAPANESE", "KATAKANA": "JAPANESE"}
# A few frequent function words per Latin-script language; short or code-like text is not
# judged on language at all.
_STOPWORDS = {
    "en": {"the", "and", "is", "are", "how", "what", "to", "you", "my", "of", "i", "can", "do",
           "for", "with", "it", "this", "that", "please", "in", "a", "an", "me", "your"},
    "es": {"el", "la", "los", "las", "que", "de", "y", "cómo", "qué", "para", "por", "una",
           "es", "con", "mi", "puedo", "necesito", "del", "se", "en", "un", "cuál", "como", "sin",
           "pero", "hacer", "muy", "más"},
    "fr": {"le", "la", "les", "et", "est", "comment", "pour", "je", "une", "des", "que", "du",
           "avec", "mon", "ma", "vous", "pas", "qui", "dans", "un", "sur", "quel"},
    "de": {"der", "die", "das", "und", "ist", "wie", "ich", "nicht", "ein", "eine", "mit",
           "zu", "für", "mein", "meine", "sie", "auf", "was", "kann", "bitte", "den", "dem"},
    "it": {"il", "che", "di", "come", "per", "una", "sono", "non", "gli", "della", "posso",
           "con", "mio", "mia", "cosa", "è", "un", "del", "nel", "quale"},
    "pt": {"o", "que", "de", "como", "para", "uma", "não", "os", "eu", "do", "da", "você",
           "com", "meu", "minha", "é", "um", "posso", "em", "qual"},
}
_MIN_WORDS = 4  # fewer words: no language decision
_CODE = re.compile(r"[{}\[\]();=<>$`\\]|\b(?:def|class|import|return|function|select)\b")


def _script(text: str) -> str | None:
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "").split(" ")[0]
            if name in _SCRIPTS:
                group = _SCRIPT_GROUP.get(name, name)
                counts[group] = counts.get(group, 0) + 1
    if not counts:
        return None
    if "JAPANESE" in counts and "CJK" in counts:  # kanji with kana: Japanese
        counts["JAPANESE"] += counts.pop("CJK")
    return max(counts, key=lambda s: counts[s])


def _latin_language(words: list[str]) -> str | None:
    scores = {lang: sum(w in common for w in words) for lang, common in _STOPWORDS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    ranked = sorted(scores.values(), reverse=True)
    # a clear winner only: two function words at least, ahead of the runner-up
    return best if ranked[0] >= 2 and ranked[0] > ranked[1] else None


def _code_like(text: str) -> bool:
    return len(_CODE.findall(text)) >= 3


def language(text: str) -> tuple[str | None, str | None]:
    """A coarse, dependency-free guess of ``text``'s language: (its main script, the language
    told by function words for Latin script); None where code-like or too short to tell."""
    if _code_like(text):
        return None, None
    script = _script(text)
    words = re.findall(r"[^\W\d_]+", text.lower())
    if script != "LATIN" or len(words) < _MIN_WORDS:
        return script, None
    return script, _latin_language(words)


def same_language(original: str, refined: str) -> bool:
    """False only when the two texts are told apart: another script, or other function words."""
    (script_a, lang_a), (script_b, lang_b) = language(original), language(refined)
    if script_a is None or script_b is None:
        return True
    if script_a != script_b:
        return False
    return lang_a is None or lang_b is None or lang_a == lang_b


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"\w+", text))


def _unquote(text: str) -> str:
    text = text.strip()
    for q in ('"', "'", "“", "«", "`"):
        close = {"“": "”", "«": "»"}.get(q, q)
        if len(text) > 1 and text.startswith(q) and text.endswith(close):
            return text[1:-1].strip()
    return text


# A leading label or preamble line: "Rewritten request:", "Sure, here is the refined prompt:".
_LABEL = re.compile(r"^\s*(?:(?:sure|okay|ok)[,!.]?\s*)?(?:here\s+is|here's)?\s*(?:the|your|a)?\s*"
                    r"(?:rewritten|refined|improved|clearer|revised)?\s*(?:version\s+of\s+the\s+)?"
                    r"(?:request|prompt|question)\s*:\s*", re.IGNORECASE)


def clean_refined(text: str) -> str:
    """A refiner's raw output as the request it stands for: stripped, surrounding quotes and a
    leading label such as ``Rewritten request:`` removed."""
    return _unquote(_LABEL.sub("", _unquote(text), count=1))


def check_refined(original: str, refined: str) -> str:
    """``"refined"`` when ``refined`` is usable in place of ``original``; otherwise the outcome
    that rejects it (``"empty"``, ``"refusal"``, ``"length"``, ``"answer"``, ``"language"`` or
    ``"unchanged"``)."""
    if not refined.strip():
        return "empty"
    if _REFUSAL.search(refined) and not _REFUSAL.search(original):
        return "refusal"
    if len(refined) > MAX_GROWTH * len(original) + MAX_EXTRA_CHARS:
        return "length"
    if _answer_like(original, refined):
        return "answer"
    if not same_language(original, refined):
        return "language"
    if _normalise(original) == _normalise(refined):
        return "unchanged"
    return "refined"
