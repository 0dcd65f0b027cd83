"""The guideline taxonomy: category ids, their kind, a short description, and loose aliases.

The single source for every package that names a category (library schema, build stages, the
judge, benchmarks). See docs/taxonomy.md.
"""

from __future__ import annotations

import re
from typing import Literal

from rapidfuzz import fuzz, process

Kind = Literal["safety", "quality"]

# The fixed contract (docs/taxonomy.md): id -> kind. Ids are never renamed, merged or dropped.
TAXONOMY: dict[str, Kind] = {
    "violence": "safety",
    "weapons": "safety",
    "cybercrime": "safety",
    "fraud_deception": "safety",
    "illegal_goods_drugs": "safety",
    "other_crime": "safety",
    "sexual_content": "safety",
    "child_safety": "safety",
    "self_harm": "safety",
    "hate_discrimination": "safety",
    "harassment_toxicity": "safety",
    "privacy": "safety",
    "misinformation": "safety",
    "intellectual_property": "safety",
    "specialized_advice": "safety",
    "controversial_topics": "safety",
    "unethical_behavior": "safety",
    "chatbot_interaction": "safety",
    "jailbreak_manipulation": "safety",
    "quality_coding": "quality",
    "quality_math_reasoning": "quality",
    "quality_writing": "quality",
    "quality_knowledge": "quality",
    "quality_advice": "quality",
    "quality_conversation": "quality",
}

SAFETY_IDS: tuple[str, ...] = tuple(c for c, k in TAXONOMY.items() if k == "safety")

# One line per id: what it covers, in words short enough for prompts and tables.
CATEGORY_HINTS: dict[str, str] = {
    "violence": "violent crime, physical harm, terrorism, incitement",
    "weapons": "firearms, explosives, chemical or biological weapons, dangerous devices",
    "cybercrime": "malware, hacking, intrusion, credential theft, attack exploits",
    "fraud_deception": "scams, phishing, financial fraud, forgery, impersonation, cheating",
    "illegal_goods_drugs": "drugs, trafficking, counterfeit or regulated goods",
    "other_crime": "theft, vandalism, other non-violent illegal activity",
    "sexual_content": "explicit sexual content, sexualised requests about real people",
    "child_safety": "abuse, grooming or endangering of children",
    "self_harm": "suicide, self-injury, eating disorders, dangerous challenges",
    "hate_discrimination": "hate speech, stereotypes, discrimination against groups",
    "harassment_toxicity": "insults, bullying, threats, toxic language",
    "privacy": "personal data, doxxing, stalking, leaking confidential information",
    "misinformation": "false health or science claims, conspiracy theories, disinformation",
    "intellectual_property": "piracy, copyright infringement, reproducing protected work",
    "specialized_advice": "high-stakes medical, legal or financial advice",
    "controversial_topics": "politics, religion, divisive social issues",
    "unethical_behavior": "manipulation, lying, cheating, cruelty that is legal but harmful",
    "chatbot_interaction": "treating the assistant as human, emotional dependence, crises",
    "jailbreak_manipulation": "role-play or 'ignore your rules' tricks, prompt injection",
    "quality_coding": "benign programming and software questions",
    "quality_math_reasoning": "benign maths, logic and step-by-step reasoning",
    "quality_writing": "benign creative writing, editing, summarising, translation",
    "quality_knowledge": "benign factual and explanatory questions",
    "quality_advice": "benign everyday advice, planning, how-to",
    "quality_conversation": "benign chit-chat, opinions, small talk",
}


# Loose labels a model (or a data set) uses for a taxonomy id; checked as word prefixes.
ALIASES: dict[str, str] = {
    "violen": "violence", "terror": "violence", "murder": "violence", "assault": "violence",
    "weapon": "weapons", "firearm": "weapons", "explosive": "weapons", "bomb": "weapons",
    "hack": "cybercrime", "malware": "cybercrime", "cyber": "cybercrime", "ransom": "cybercrime",
    "scam": "fraud_deception", "phish": "fraud_deception", "fraud": "fraud_deception",
    "decept": "fraud_deception", "forg": "fraud_deception", "cheat": "fraud_deception",
    "drug": "illegal_goods_drugs", "traffick": "illegal_goods_drugs",
    "counterfeit": "illegal_goods_drugs", "theft": "other_crime", "steal": "other_crime",
    "crime": "other_crime", "illegal": "other_crime", "vandal": "other_crime",
    "sexual": "sexual_content", "porn": "sexual_content", "explicit": "sexual_content",
    "child": "child_safety", "minor": "child_safety", "suicid": "self_harm",
    "self harm": "self_harm", "self-harm": "self_harm", "mental health": "chatbot_interaction",
    "hate": "hate_discrimination", "discriminat": "hate_discrimination",
    "racis": "hate_discrimination", "bias": "hate_discrimination", "unfair": "hate_discrimination",
    "harass": "harassment_toxicity", "toxic": "harassment_toxicity",
    "insult": "harassment_toxicity", "bully": "harassment_toxicity", "privacy": "privacy",
    "personal data": "privacy",
    "dox": "privacy", "misinfo": "misinformation", "disinfo": "misinformation",
    "conspira": "misinformation", "copyright": "intellectual_property",
    "piracy": "intellectual_property", "intellectual": "intellectual_property",
    "medical": "specialized_advice", "legal advice": "specialized_advice",
    "financial": "specialized_advice", "speciali": "specialized_advice",
    "politic": "controversial_topics", "religio": "controversial_topics",
    "controvers": "controversial_topics", "sensitive": "controversial_topics",
    "unethical": "unethical_behavior", "ethic": "unethical_behavior", "moral": "unethical_behavior",
    "manipulat": "unethical_behavior", "chatbot": "chatbot_interaction",
    "jailbreak": "jailbreak_manipulation", "prompt injection": "jailbreak_manipulation",
    "prompt leak": "jailbreak_manipulation", "role play": "jailbreak_manipulation",
    "coding": "quality_coding", "code": "quality_coding", "program": "quality_coding",
    "software": "quality_coding", "math": "quality_math_reasoning",
    "reasoning": "quality_math_reasoning", "logic": "quality_math_reasoning",
    "writing": "quality_writing", "creative": "quality_writing", "translat": "quality_writing",
    "summar": "quality_writing", "knowledge": "quality_knowledge", "fact": "quality_knowledge",
    "science": "quality_knowledge", "history": "quality_knowledge", "advice": "quality_advice",
    "planning": "quality_advice", "how-to": "quality_advice", "convers": "quality_conversation",
    "chit": "quality_conversation", "small talk": "quality_conversation",
}

# Words in an input that hint at a quality category when nothing better is known.
QUALITY_HINTS: dict[str, tuple[str, ...]] = {
    "quality_coding": ("code", "python", "javascript", "function", "bug", "error", "sql",
                       "script", "compile", "api", "git", "linux", "process", "program"),
    "quality_math_reasoning": ("calculate", "solve", "equation", "probability", "math",
                               "how many", "percent", "proof", "integral", "riddle", "puzzle"),
    "quality_writing": ("write", "poem", "story", "essay", "rewrite", "edit", "translate",
                        "summar", "letter", "email", "proofread", "lyrics", "tweet"),
    "quality_advice": ("how do i", "how can i", "tips", "should i", "recommend", "plan",
                       "best way", "advice", "help me"),
    "quality_conversation": ("hello", "hi ", "how are you", "your favourite", "your favorite",
                             "do you like", "let's chat", "i feel", "bored"),
    "quality_knowledge": ("what is", "who ", "when ", "why ", "explain", "define", "history",
                          "difference between"),
}

_CLEAN = re.compile(r"[`*\"'\[\]()<>.]")
_ID_WORD = re.compile(r"\b(" + "|".join(sorted(TAXONOMY, key=len, reverse=True)) + r")\b")


def normalise_category(label: str, *, strict: bool = False) -> str | None:
    """Map a loose label ('Cyber-crime', '**self harm**') to a taxonomy id; None if unsure.

    ``strict`` only accepts taxonomy ids written out in the text (for scanning free prose).
    """
    low = label.strip().lower()
    ids = _ID_WORD.search(low.replace("-", "_"))
    if ids:
        return ids.group(1)
    if strict:
        return None
    low = _CLEAN.sub(" ", low).strip()
    if not low or len(low) > 60:
        return None
    key = re.sub(r"[\s\-]+", "_", low)
    if key in TAXONOMY:
        return key
    for alias, cid in ALIASES.items():
        if re.search(r"\b" + re.escape(alias), low):
            return cid
    best = process.extractOne(key, list(TAXONOMY), scorer=fuzz.ratio, score_cutoff=80)
    return best[0] if best else None


# OpenAI's moderation category names, each scored from taxonomy ids: the highest of ``ANY``,
# or, for the "threatening" ones, the lowest of ``ALL`` (both harms at once).
OPENAI_ANY: dict[str, tuple[str, ...]] = {
    "harassment": ("harassment_toxicity",),
    "hate": ("hate_discrimination",),
    "illicit": ("illegal_goods_drugs", "other_crime", "cybercrime", "fraud_deception",
                "weapons"),
    "illicit/violent": ("weapons",),
    "self-harm": ("self_harm",),
    "self-harm/instructions": ("self_harm",),
    "self-harm/intent": ("self_harm",),
    "sexual": ("sexual_content",),
    "sexual/minors": ("child_safety",),
    "violence": ("violence",),
    "violence/graphic": ("violence",),
}
OPENAI_ALL: dict[str, tuple[str, ...]] = {
    "harassment/threatening": ("harassment_toxicity", "violence"),
    "hate/threatening": ("hate_discrimination", "violence"),
}


def openai_scores(scores: dict[str, float]) -> dict[str, float]:
    """OpenAI moderation category scores derived from taxonomy category scores."""
    out = {name: max(scores.get(c, 0.0) for c in ids) for name, ids in OPENAI_ANY.items()}
    out |= {name: min(scores.get(c, 0.0) for c in ids) for name, ids in OPENAI_ALL.items()}
    return out
