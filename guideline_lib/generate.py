"""Guideline generation: general guidelines for inputs like this one (safety or quality prompt)."""

from __future__ import annotations

from dataclasses import dataclass, field

from guideline_lib.prompting import ChatClient, ask, load_prompt, render
from guideline_lib.split import SplitConfig, split_guidelines


@dataclass(frozen=True)
class GenerateConfig:
    """Guideline generation settings; the answer must split into at least ``min_guidelines``."""

    attempts: int = 3
    max_tokens: int | None = None  # None: the client's max_tokens
    min_guidelines: int = 1
    split: SplitConfig = field(default_factory=SplitConfig)
    risky_template: str | None = None
    benign_template: str | None = None


@dataclass(frozen=True)
class Generated:
    """Atomic guidelines written for one input, with the raw answer they came from."""

    guidelines: list[str]
    raw: str
    calls: int


def generation_messages(
    text: str, *, risky: bool, category: str, config: GenerateConfig
) -> list[dict[str, str]]:
    """The chat messages asking for guidelines (safe + helpful for risky, quality for benign)."""
    if risky:
        template = config.risky_template or load_prompt("generate_risky")
    else:
        template = config.benign_template or load_prompt("generate_benign")
    return render(template, input=text, category=category)


async def generate_guidelines(
    text: str, *, risky: bool, category: str, client: ChatClient, config: GenerateConfig,
    salt: int = 0,
) -> Generated:
    """Ask for guidelines and split them; retried while too few usable guidelines come back."""
    messages = generation_messages(text, risky=risky, category=category, config=config)

    def parse(answer: str) -> list[str] | None:
        found = split_guidelines(answer, config=config.split, source_input=text)
        return found if len(found) >= config.min_guidelines else None

    answer = await ask(client, messages, parse, attempts=config.attempts,
                       max_tokens=config.max_tokens, salt=salt)
    return Generated(guidelines=answer.value, raw=answer.raw, calls=answer.calls)
