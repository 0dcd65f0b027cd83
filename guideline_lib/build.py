"""The batch library builder: augment, detect, generate + split, categorise; all journaled."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from guideline_lib.augment import AugmentConfig, novel_inputs, plan_rounds, propose_inputs
from guideline_lib.batch import BatchStats, run_batch
from guideline_lib.categorise import CategoriseConfig, base_category, categorise
from guideline_lib.dedup import DedupConfig
from guideline_lib.detect import DetectConfig, Detection, detect_risk
from guideline_lib.generate import GenerateConfig, generate_guidelines
from guideline_lib.inputs import InputItem, input_key
from guideline_lib.journal import Journal
from guideline_lib.llm import (
    ClientStats,
    LLMClient,
    LLMConfig,
    LLMError,
    LLMUnreachable,
    ResponseCache,
)
from guideline_lib.prompting import ChatClient, ParseFailure, prompt_version
from guideline_lib.schema import utc_now
from guideline_lib.starter import TEST_PERCENT


@dataclass(frozen=True)
class BuildConfig:
    """Every stage's settings for one build."""

    augment: AugmentConfig = field(default_factory=AugmentConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    categorise: CategoriseConfig = field(default_factory=CategoriseConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    test_percent: int = TEST_PERCENT
    retry_failed: bool = False


@dataclass(frozen=True)
class CallPlan:
    """What a build would do now: inputs left and first-try LLM calls per stage."""

    inputs: int
    done: int
    augment: int
    augment_max_new: int
    detect: int
    generate: int
    categorise: int
    calls_per_input: int

    @property
    def pending(self) -> int:
        """Inputs not finished yet."""
        return self.inputs - self.done

    @property
    def calls(self) -> int:
        """LLM calls for the known inputs, retries of unparseable answers not counted."""
        return self.augment + self.detect + self.generate + self.categorise

    @property
    def max_calls(self) -> int:
        """Upper bound including the inputs augmentation may add."""
        return self.calls + self.augment_max_new * self.calls_per_input


@dataclass
class BuildRun:
    """The outcome of running the LLM stages: all inputs (augmented included) and batch counts."""

    items: list[InputItem]
    augmented: int = 0
    stats: dict[str, BatchStats] = field(default_factory=dict)


@dataclass(frozen=True)
class Keys:
    """Journal key prefixes of one build's stages; each hashes what shapes that stage's output.

    A build with another model, prompt or stage setting therefore never reuses records made
    under different settings (the response cache still saves the calls that did not change).
    """

    augment: str
    detect: str
    generate: str
    categorise: str

    def of(self, stage: str, item_key: str) -> str:
        """The journal key of ``item_key`` (an input key or round key) in ``stage``."""
        return f"{stage[:3]}:{getattr(self, stage)}:{item_key}"


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def stage_keys(config: BuildConfig, llm: LLMConfig) -> Keys:
    """The journal key prefixes for ``config`` on ``llm``."""
    sampling = {"model": llm.model, "temperature": llm.temperature,
                "max_tokens": llm.max_tokens, "prompts": prompt_version()}
    det = _digest({"s": sampling, "detect": asdict(config.detect)})[:10]
    fallback = {k: v for k, v in asdict(config.categorise).items() if k.startswith("fallback")}
    gen = _digest({"d": det, "generate": asdict(config.generate), "fallback": fallback})[:10]
    return Keys(augment=_digest({"s": sampling, "augment": asdict(config.augment)})[:10],
                detect=det, generate=gen,
                categorise=_digest({"g": gen, "categorise": asdict(config.categorise)})[:10])


def calls_per_input(config: BuildConfig) -> int:
    """First-try LLM calls per input: detect, generate, and categorise in 'llm' mode."""
    return 2 + (config.categorise.mode == "llm")


def plan_calls(
    items: Sequence[InputItem], *, journal: Journal, config: BuildConfig, llm: LLMConfig
) -> CallPlan:
    """Count the work a build would do now (for --dry-run); touches no network."""
    keys = stage_keys(config, llm)
    done = journal.done_keys()
    if config.retry_failed:
        done -= journal.failed_keys()
    rounds = plan_rounds([i.text for i in items], config=config.augment)
    aug = sum(keys.of("augment", r.key) not in done for r in rounds)

    def left(stage: str) -> int:
        return sum(keys.of(stage, i.key) not in done for i in items)

    llm_cats = config.categorise.mode == "llm"
    last = "categorise" if llm_cats else "generate"
    return CallPlan(inputs=len(items), done=len(items) - left(last), augment=aug,
                    augment_max_new=aug * config.augment.per_round, detect=left("detect"),
                    generate=left("generate"), categorise=left("categorise") if llm_cats else 0,
                    calls_per_input=calls_per_input(config))


def _failed(stage: str, exc: Exception, salt: int) -> dict[str, Any]:
    record: dict[str, Any] = {"status": "failed", "stage": stage, "error": str(exc),
                              "retry_round": salt}
    if isinstance(exc, ParseFailure):
        record["raw"] = [r[:400] for r in exc.raw]
    return record


async def detect_record(item: InputItem, *, client: ChatClient, config: BuildConfig,
                        salt: int = 0) -> dict[str, Any]:
    """The detect stage of one input, as a journal record."""
    try:
        d = await detect_risk(item.text, client=client, config=config.detect, salt=salt)
    except (ParseFailure, LLMError) as exc:
        if isinstance(exc, LLMUnreachable):
            raise
        return _failed("detect", exc, salt)
    return {"input": item.text, "risky": d.risky, "category": d.category, "calls": d.calls,
            "retry_round": salt}


async def generate_record(item: InputItem, detected: dict[str, Any], *, client: ChatClient,
                          config: BuildConfig, salt: int = 0) -> dict[str, Any]:
    """The generate + split stage of one detected input, as a journal record."""
    detection = Detection(risky=bool(detected["risky"]), category=detected.get("category"))
    category = base_category(detection, item.text, config=config.categorise)
    try:
        g = await generate_guidelines(item.text, risky=detection.risky, category=category,
                                      client=client, config=config.generate, salt=salt)
    except (ParseFailure, LLMError) as exc:
        if isinstance(exc, LLMUnreachable):
            raise
        return _failed("generate", exc, salt)
    return {"input": item.text, "source": f"{item.source}:{item.line}", "risky": detection.risky,
            "category": category, "guidelines": g.guidelines, "calls": g.calls,
            "finished": utc_now(), "retry_round": salt}


async def categorise_record(item: InputItem, detected: dict[str, Any],
                            generated: dict[str, Any], *, client: ChatClient,
                            config: BuildConfig, salt: int = 0) -> dict[str, Any]:
    """The LLM categorise stage of one input's guidelines, as a journal record."""
    detection = Detection(risky=bool(detected["risky"]), category=detected.get("category"))
    try:
        c = await categorise(generated["guidelines"], detection=detection, text=item.text,
                             client=client, config=config.categorise, salt=salt)
    except LLMError as exc:
        if isinstance(exc, LLMUnreachable):
            raise
        return _failed("categorise", exc, salt)
    return {"categories": c.categories, "calls": c.calls, "retry_round": salt}


def _salts(journal: Journal, config: BuildConfig) -> dict[str, int]:
    """Retry round per failed key (when retrying failures): each round draws afresh."""
    if not config.retry_failed:
        return {}
    return {r["key"]: int(r.get("retry_round") or 0) + 1 for r in journal.records()
            if r.get("status") == "failed"}


def _ok(journal: Journal) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in journal.records() if r.get("status", "ok") == "ok"}


async def _augment(items: list[InputItem], *, client: ChatClient, journal: Journal,
                   config: BuildConfig, keys: Keys, concurrency: int, show_progress: bool
                   ) -> tuple[list[InputItem], BatchStats | None]:
    rounds = plan_rounds([i.text for i in items], config=config.augment)
    if not rounds:
        return [], None
    salts = _salts(journal, config)

    async def propose(r: Any) -> dict[str, Any]:
        salt = salts.get(keys.of("augment", r.key), 0)
        proposals = await propose_inputs(r.seeds, client=client, config=config.augment,
                                         salt=salt)
        return {"round": r.index, "proposals": proposals, "retry_round": salt}

    stats = await run_batch(rounds, propose, journal=journal,
                            key=lambda r: keys.of("augment", r.key), concurrency=concurrency,
                            desc="augment", show_progress=show_progress,
                            retry_failed=config.retry_failed, fatal=(LLMUnreachable,))
    ok = _ok(journal)
    proposals = [(r.index, p) for r in rounds
                 for p in ok.get(keys.of("augment", r.key), {}).get("proposals", [])]
    keep = set(novel_inputs([i.text for i in items], [p for _, p in proposals],
                            threshold=config.augment.rouge_threshold))
    known = {i.key for i in items}
    new: list[InputItem] = []
    for n, (index, text) in enumerate(proposals, 1):
        key = input_key(text)
        if text in keep and key not in known:
            known.add(key)
            new.append(InputItem(key=key, text=text, source=f"augment:round{index}", line=n))
    return new, stats


async def run_build(
    items: Sequence[InputItem],
    *,
    client: ChatClient,
    journal: Journal,
    config: BuildConfig,
    llm: LLMConfig,
    show_progress: bool = True,
) -> BuildRun:
    """Run the LLM stages over ``items`` (plus augmented ones); results land in the journal.

    Stages run one after the other over all inputs (detect all, then generate all), so
    consecutive prompts share their long prefix, which servers with prefix caching reuse.
    Safe to kill at any point: a rerun with the same arguments skips what the journal holds.
    """
    keys = stage_keys(config, llm)
    run = BuildRun(items=list(items))
    new, aug_stats = await _augment(run.items, client=client, journal=journal, config=config,
                                    keys=keys, concurrency=llm.concurrency,
                                    show_progress=show_progress)
    if aug_stats is not None:
        run.stats["augment"] = aug_stats
    run.items += new
    run.augmented = len(new)
    salts = _salts(journal, config)
    common: dict[str, Any] = {"journal": journal, "concurrency": llm.concurrency,
                              "show_progress": show_progress, "fatal": (LLMUnreachable,),
                              "retry_failed": config.retry_failed}

    def salt(stage: str, item: InputItem) -> int:
        return salts.get(keys.of(stage, item.key), 0)

    async def detect(item: InputItem) -> dict[str, Any]:
        return await detect_record(item, client=client, config=config,
                                   salt=salt("detect", item))

    run.stats["detect"] = await run_batch(run.items, detect, desc="detect",
                                          key=lambda i: keys.of("detect", i.key), **common)
    ok = _ok(journal)
    detected = [i for i in run.items if keys.of("detect", i.key) in ok]

    async def generate(item: InputItem) -> dict[str, Any]:
        return await generate_record(item, ok[keys.of("detect", item.key)], client=client,
                                     config=config, salt=salt("generate", item))

    run.stats["generate"] = await run_batch(detected, generate, desc="generate",
                                            key=lambda i: keys.of("generate", i.key), **common)
    if config.categorise.mode != "llm":
        return run
    ok = _ok(journal)
    generated = [i for i in detected if keys.of("generate", i.key) in ok]

    async def label(item: InputItem) -> dict[str, Any]:
        return await categorise_record(item, ok[keys.of("detect", item.key)],
                                       ok[keys.of("generate", item.key)], client=client,
                                       config=config, salt=salt("categorise", item))

    run.stats["categorise"] = await run_batch(generated, label, desc="categorise",
                                              key=lambda i: keys.of("categorise", i.key),
                                              **common)
    return run


async def execute_build(
    items: Sequence[InputItem],
    *,
    llm: LLMConfig,
    config: BuildConfig,
    journal: Journal,
    cache: ResponseCache | None,
    show_progress: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[BuildRun, ClientStats]:
    """Open a client on ``llm`` and run the build; checks the endpoint first if work is left."""
    async with LLMClient(llm, cache=cache, transport=transport) as client:
        if plan_calls(items, journal=journal, config=config, llm=llm).calls:
            await client.ping()
        run = await run_build(items, client=client, journal=journal, config=config, llm=llm,
                              show_progress=show_progress)
        return run, client.stats


def input_records(items: Sequence[InputItem], journal: Journal, *, config: BuildConfig,
                  llm: LLMConfig) -> dict[str, dict[str, Any]]:
    """One combined record per input key (ok, failed with its stage), for assembly."""
    keys = stage_keys(config, llm)
    latest = {r["key"]: r for r in journal.records()}
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        det = latest.get(keys.of("detect", item.key))
        gen = latest.get(keys.of("generate", item.key))
        for rec in (det, gen):
            if rec is not None and rec.get("status") == "failed":
                out[item.key] = rec
                break
        else:
            if det is None or gen is None:
                continue  # not finished (a build that was stopped)
            categories = [gen["category"]] * len(gen["guidelines"])
            cat = latest.get(keys.of("categorise", item.key))
            if config.categorise.mode == "llm" and cat and cat.get("status") == "ok" and \
                    len(cat["categories"]) == len(categories):
                categories = cat["categories"]
            out[item.key] = {"status": "ok", "input": item.text, "finished": gen.get("finished"),
                             "guidelines": [{"text": t, "category": c} for t, c in
                                            zip(gen["guidelines"], categories, strict=True)]}
    return out
