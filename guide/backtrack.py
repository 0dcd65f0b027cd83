"""Stream backtracking without an event loop: the hold-back window's arithmetic, the upstream's
own backtrack marker, strengthened guidance for a continuation, and the last-resort completion.

The gateway (``app/backtrack.py``) drives these on a live stream; ``finetune/backtrack.py``
writes training data whose marker this module undoes, so both read one definition.
Text is measured in whitespace-separated words: the gateway sees text deltas, not token ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from guide.views import conversation_views, normalise_roles
from guideline_lib.render import inject_system
from retriever.query import conversation_query
from retriever.types import Retriever, SelectConfig

Mode = Literal["off", "monitor", "enforce"]
MODES: tuple[Mode, ...] = ("off", "monitor", "enforce")  # loose -> tight
Continuation = Literal["fold", "prefill"]
DEFAULT_MARKER = "[[backtrack {n}]]"
_WORD = re.compile(r"\S+")


# ---- the window ---------------------------------------------------------------------------

def word_boundary(text: str) -> int:
    """The end of the last complete word: text after it may still be a word being typed."""
    for i in range(len(text) - 1, -1, -1):
        if text[i].isspace():
            return i + 1
    return 0


def words_in(text: str) -> int:
    """How many words ``text`` holds."""
    return len(text.split())


def release_point(text: str, judged_safe: int, window: int) -> int:
    """How much of ``text`` may leave the window: what the critic judged safe
    (``text[:judged_safe]``) less its last ``window`` words, which wait for more context."""
    if window <= 0:
        return judged_safe
    starts = [m.start() for m in _WORD.finditer(text, 0, judged_safe)]
    return starts[-window] if len(starts) >= window else 0


# ---- the upstream's own marker ------------------------------------------------------------

@dataclass(frozen=True)
class Marker:
    """A plain-text backtrack marker naming how many words before it to take back, written
    from a template with one ``{n}`` (default ``[[backtrack {n}]]``)."""

    template: str = DEFAULT_MARKER

    def __post_init__(self) -> None:
        if self.template.count("{n}") != 1 or not self.template.split("{n}")[0]:
            raise ValueError("a backtrack marker needs text before exactly one {n}")

    @property
    def head(self) -> str:
        return self.template.split("{n}")[0]

    @property
    def tail(self) -> str:
        return self.template.split("{n}")[1]

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.head) + r"(\d{1,4})" + re.escape(self.tail))

    def render(self, n: int) -> str:
        """The marker that takes back ``n`` words."""
        return self.template.replace("{n}", str(n))

    def _could_become(self, s: str) -> bool:
        head, tail = self.head, self.tail
        if len(s) <= len(head):
            return head.startswith(s)
        if not s.startswith(head):
            return False
        rest = s[len(head):]
        digits = len(rest) - len(rest.lstrip("0123456789"))
        return 0 < digits <= 4 and len(rest) - digits < len(tail) \
            and tail.startswith(rest[digits:])

    def partial_start(self, text: str) -> int:
        """Where an unfinished marker may begin at the end of ``text`` (``len(text)`` when none):
        text from there is held until it is clear what it is."""
        span = len(self.head) + 4 + len(self.tail)
        for i in range(max(0, len(text) - span), len(text)):
            if text[i] == self.head[0] and self._could_become(text[i:]):
                return i
        return len(text)

    def apply(self, text: str, *, floor: int = 0) -> tuple[str, list[int]]:
        """``text`` with each complete marker and the words it names removed; nothing before
        ``floor`` (text already sent) is touched. Returns the text and the words removed."""
        removed: list[int] = []
        while (m := self.pattern.search(text, floor)) is not None:
            before, after = text[:m.start()], text[m.end():]
            keep = len(before)
            starts = [w.start() for w in _WORD.finditer(before, floor)]
            n = min(int(m.group(1)), len(starts))
            if n:
                keep = starts[-n]
            kept = before[:keep]
            if (not kept or kept[-1].isspace()) and after[:1].isspace():
                after = after.lstrip()
            text = kept + after
            removed.append(n)
        return text, removed


# ---- the continuation ---------------------------------------------------------------------

FOLD = ("(Your reply so far is between the <draft> tags. Continue it from exactly where it "
        "stops: do not repeat it, do not mention this note, and keep to the guidelines.)\n"
        "<draft>\n{prefix}\n</draft>")
STRENGTHEN = ("Take extra care with this answer. A draft drifted into content about {topics} "
              "and was withdrawn. Do not give operational details on that; offer the safe, "
              "useful part of the answer instead.")


def strengthened_block(messages: Sequence[dict[str, Any]], categories: Sequence[str],
                       retriever: Retriever, *, k: int = 3, window: int = 3) -> str:
    """Extra guidance for the categories the critic named: the library's safety guidelines of
    those categories that best match the conversation (the retriever's own ranking), up to
    ``k``, under a short note. Runs one encoder call."""
    cats = set(categories)
    config = SelectConfig(k=50, min_score=-1.0, safety_margin=None, candidates=200,
                          dedup_threshold=1.0)
    hits = retriever.search_batch([conversation_views(messages, window=window)], [config])[0]
    texts = [h.text for h in hits if h.category in cats and h.kind == "safety"][:k]
    lines = [STRENGTHEN.format(topics=", ".join(c.replace("_", " ") for c in categories)
                               or "unsafe topics")]
    lines += [f"- {t}" for t in texts]
    return "\n".join(lines)


def continuation_messages(messages: Sequence[dict[str, Any]], prefix: str, *, block: str,
                          how: Continuation) -> list[dict[str, Any]]:
    """The guided ``messages`` with ``block`` added to the system message and the clean
    ``prefix`` given back: folded into the latest user turn with an instruction to continue
    (``fold``, any chat template), or as a partial assistant turn (``prefill``, for upstreams
    that continue one)."""
    out = inject_system([dict(m) for m in messages], block)
    if not prefix.strip():
        return out
    if how == "prefill":
        return [*out, {"role": "assistant", "content": prefix}]
    note = FOLD.format(prefix=prefix.rstrip())
    for i in range(len(out) - 1, -1, -1):
        if out[i].get("role") == "user":
            content = out[i].get("content")
            if isinstance(content, list):
                out[i] = {**out[i], "content": [*content, {"type": "text", "text": note}]}
            else:
                out[i] = {**out[i], "content": f"{content or ''}\n\n{note}"}
            return out
    return [*out, {"role": "user", "content": note}]


# ---- the last resort ----------------------------------------------------------------------

# After the last allowed retraction the answer ends with one of these, in the conversation's
# language (a guess from common words; English otherwise). Written for the project.
CLOSINGS = {
    "en": "I'll stop here: the rest would need details I can't give. I'm glad to help with the "
          "safe side of your question, such as the background, how to stay protected, or where "
          "to find qualified help.",
    "es": "Me detengo aquí: el resto necesitaría detalles que no puedo dar. Con gusto te ayudo "
          "con la parte segura de tu pregunta, como el contexto, cómo protegerte o dónde "
          "encontrar ayuda cualificada.",
    "fr": "Je m'arrête ici : la suite demanderait des détails que je ne peux pas donner. Je "
          "peux volontiers t'aider sur le côté sûr de ta question, comme le contexte, la "
          "prévention ou les bonnes personnes à contacter.",
    "de": "Ich höre hier auf: Der Rest bräuchte Details, die ich nicht geben kann. Gern helfe "
          "ich beim sicheren Teil deiner Frage, etwa mit Hintergrund, Schutzmaßnahmen oder "
          "Stellen, die fachkundig helfen.",
    "it": "Mi fermo qui: il resto richiederebbe dettagli che non posso dare. Ti aiuto volentieri "
          "con la parte sicura della domanda, come il contesto, come proteggerti o a chi "
          "rivolgerti.",
    "pt": "Vou parar aqui: o resto exigiria detalhes que não posso dar. Posso ajudar com a parte "
          "segura da sua pergunta, como o contexto, como se proteger ou onde encontrar ajuda "
          "qualificada.",
}
_COMMON = {
    "en": {"the", "and", "is", "how", "what", "to", "you", "my", "of", "i", "can", "do"},
    "es": {"el", "la", "que", "de", "y", "los", "cómo", "para", "por", "una", "necesito", "es"},
    "fr": {"le", "la", "les", "et", "est", "comment", "pour", "je", "une", "des", "que", "du"},
    "de": {"der", "die", "das", "und", "ist", "wie", "ich", "nicht", "ein", "eine", "mit", "zu"},
    "it": {"il", "che", "di", "come", "per", "una", "sono", "non", "gli", "della", "posso"},
    "pt": {"o", "que", "de", "como", "para", "uma", "não", "os", "eu", "do", "da", "você"},
}


def guess_language(text: str) -> str:
    """A coarse guess among the languages of ``CLOSINGS`` from common words."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    scores = {lang: sum(w in common for w in words) for lang, common in _COMMON.items()}
    best = max(scores, key=lambda lang: (scores[lang], lang == "en"))
    return best if scores[best] else "en"


def closing(messages: Sequence[dict[str, Any]]) -> str:
    """The short safe completion in the language of the latest user turn."""
    return CLOSINGS[guess_language(conversation_query(normalise_roles(messages), window=0))]
