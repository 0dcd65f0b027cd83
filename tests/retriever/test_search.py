"""Index round trip and manifest checks, selection rules, conversation queries, batch search."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from guideline_lib.schema import Guideline, Library
from retriever.index import IndexConfig, IndexLoadError, build_index, load_index, save_index
from retriever.query import conversation_query
from retriever.search import DenseRetriever
from retriever.select import select_hits
from retriever.types import Hit, SelectConfig
from tests.guiding import TEST_POLICY, search


def hit(text: str, score: float, kind: str = "quality") -> Hit:
    return Hit(id=f"g_{abs(hash(text)) % 10**6}", text=text, category="quality_writing",
               kind=kind, score=score)


def test_index_round_trip_and_manifest(tmp_path, small_lib, encoder):
    loaded = build_index(small_lib, encoder, encoder_path="enc", encoder_hash="abc")
    save_index(loaded, tmp_path / "idx")
    again = load_index(tmp_path / "idx", library_hash=small_lib.content_hash(),
                       encoder_hash="abc")
    assert again.ids == loaded.ids
    assert again.manifest["library_hash"] == small_lib.content_hash()
    assert again.manifest["dim"] == 384
    q = encoder.encode(["kill a hanging python process"])
    s1, r1 = loaded.index.search(q, 3)
    s2, r2 = again.index.search(q, 3)
    assert (r1 == r2).all()
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


def test_index_mismatch_is_refused(tmp_path, small_lib, encoder):
    save_index(build_index(small_lib, encoder, encoder_path="enc", encoder_hash="abc"),
               tmp_path / "idx")
    with pytest.raises(IndexLoadError, match="library"):
        load_index(tmp_path / "idx", library_hash="0" * 64, encoder_hash="abc")
    with pytest.raises(IndexLoadError, match="encoder"):
        load_index(tmp_path / "idx", library_hash=small_lib.content_hash(), encoder_hash="zzz")
    with pytest.raises(IndexLoadError, match="no index"):
        load_index(tmp_path / "missing")


def test_retriever_refuses_index_of_other_library(small_lib, encoder):
    other = Library(guidelines=[Guideline.create("Other: something else entirely.",
                                                 "quality_advice")])
    loaded = build_index(other, encoder, encoder_path="enc", encoder_hash="abc")
    with pytest.raises(IndexLoadError):
        DenseRetriever(small_lib, encoder, loaded)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_indexes_find_the_same_top_hit(small_lib, encoder, kind):
    exact = build_index(small_lib, encoder, encoder_path="e", encoder_hash="h")
    approx = build_index(small_lib, encoder, encoder_path="e", encoder_hash="h",
                         config=IndexConfig(kind=kind))  # type: ignore[arg-type]
    q = encoder.encode(["write ransomware for an office", "proofread my essay"])
    assert (exact.index.search(q, 1)[1] == approx.index.search(q, 1)[1]).all()


def test_selection_threshold_dedup_and_k():
    hits = [hit("Be concise: answer in few words.", 0.9),
            hit("Be concise: answer in few words!", 0.85),  # near-duplicate of the first
            hit("Cite sources: name where facts come from.", 0.7),
            hit("Ask for context: ask when the request is ambiguous.", 0.5),
            hit("Use tables: compare options in a table.", 0.2)]
    cfg = SelectConfig(k=6, min_score=0.3, dedup_threshold=0.5)
    kept = select_hits(hits, cfg)
    assert [h.score for h in kept] == [0.9, 0.7, 0.5]  # dup dropped, 0.2 below threshold
    assert [h.score for h in select_hits(hits, dataclasses.replace(cfg, k=2))] == [0.9, 0.7]
    # with dedup off (threshold 1.0 keeps everything not identical) the duplicate survives
    loose = select_hits(hits, dataclasses.replace(cfg, dedup_threshold=1.01))
    assert len(loose) == 4
    assert select_hits(hits, dataclasses.replace(cfg, min_score=0.95)) == []


def test_mmr_prefers_diverse_hits():
    hits = [hit("A: one", 0.9), hit("B: two", 0.89), hit("C: three", 0.6)]
    vecs = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    cfg = SelectConfig(k=2, min_score=0.0, dedup_threshold=1.01, mmr=True, mmr_lambda=0.5)
    kept = select_hits(hits, cfg, vectors=vecs)
    assert [h.text for h in kept] == ["A: one", "C: three"]
    plain = select_hits(hits, dataclasses.replace(cfg, mmr=False))
    assert [h.text for h in plain] == ["A: one", "B: two"]


def test_conversation_query_window_and_parts():
    msgs = [{"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second"},
                                         {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "user", "content": "third"}]
    assert conversation_query(msgs, window=3) == "third\nsecond\nfirst"  # latest first
    assert conversation_query(msgs, window=1) == "third\nsecond"
    assert conversation_query(msgs, window=0) == "third"
    assert conversation_query([{"role": "assistant", "content": "hi"}]) == ""


def test_search_finds_the_right_category(small_retriever):
    assert search(small_retriever, "code a ransomware that locks my office")[0].category == \
        "cybercrime"
    conv = [{"role": "user", "content": "i need help with a script"},
            {"role": "user", "content": "the python process hangs and won't stop"}]
    assert search(small_retriever, conv)[0].category == "quality_coding"
    assert search(small_retriever, "   ") == []


def test_batch_search_equals_single_search(small_retriever):
    queries = ["write me a keylogger", "fix the grammar in my letter", "how far is mars",
               "i want to end it all", ""]
    from guide.step import as_conversation, guide_batch

    batch = [g.hits for g in guide_batch([as_conversation(q) for q in queries], small_retriever,
                                         [TEST_POLICY] * len(queries))]
    for q, hits in zip(queries, batch, strict=True):
        single = search(small_retriever, q)
        assert [h.id for h in hits] == [h.id for h in single]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in single],
                                   atol=1e-5)


def test_safety_margin_keeps_safety_only_when_it_clearly_wins():
    benign = [hit("Process control: give the exact kill command.", 0.62),
              hit("No violence: decline to help hurt people.", 0.55, kind="safety"),
              hit("Show runnable code: complete minimal example.", 0.5)]
    cfg = SelectConfig(k=6, min_score=0.3, dedup_threshold=0.9, safety_margin=0.0)
    assert [h.kind for h in select_hits(benign, cfg)] == ["quality", "quality"]
    assert len(select_hits(benign, dataclasses.replace(cfg, safety_margin=None))) == 3
    risky = [hit("No malware: decline working ransomware.", 0.71, kind="safety"),
             hit("Show runnable code: complete minimal example.", 0.64)]
    assert [h.kind for h in select_hits(risky, dataclasses.replace(cfg, safety_margin=0.05))] \
        == ["safety", "quality"]
    assert [h.kind for h in select_hits(risky, dataclasses.replace(cfg, safety_margin=0.1))] \
        == ["quality"]


def test_a_long_earlier_turn_cannot_push_the_latest_one_out(small_retriever):
    # The encoder reads a bounded number of tokens; the latest turn must be among them.
    party = ("We are planning a birthday party for my daughter who turns seven, with a bouncy "
             "castle, a clown, balloons in every colour, lemonade, paper hats, music and a "
             "treasure hunt in the garden for twenty children from her class. ") * 8
    msgs = [{"role": "user", "content": party},
            {"role": "assistant", "content": "Sounds lovely!"},
            {"role": "user", "content": "now write me a keylogger that emails passwords"}]
    hits = search(small_retriever, msgs)
    assert any(h.category == "cybercrime" for h in hits)


def test_a_corrupt_or_stale_index_is_refused_on_open_and_rebuilt_with_its_kind_by_prepare(
        tmp_path, small_lib):
    import faiss

    from guideline_lib.embedded import base_model_path
    from guideline_lib.io import save_library
    from retriever.index import IndexConfig
    from retriever.prepare import prepare_retriever
    from retriever.service import RetrieverPaths, open_retriever

    save_library(small_lib, tmp_path / "lib")
    paths = RetrieverPaths(library=tmp_path / "lib", index=tmp_path / "index",
                           encoder=base_model_path(), exports=tmp_path / "encoders")
    with pytest.raises(IndexLoadError, match="guide-align prepare"):
        open_retriever(paths, backend="torch")  # opening never builds
    assert not (tmp_path / "index").exists()
    prepare_retriever(paths, backend="torch", train=False,
                      index_config=IndexConfig(kind="hnsw", hnsw_ef_search=99))
    index_file = tmp_path / "index" / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:100])  # a torn write
    with pytest.raises(IndexLoadError):
        open_retriever(paths, backend="torch")
    done = prepare_retriever(paths, backend="torch", train=False)  # rebuilt, not a crash
    assert done.made and "index" in done.made[0]
    r = open_retriever(paths, backend="torch")
    assert search(r, "write me a keylogger that emails passwords")
    rebuilt = faiss.downcast_index(faiss.read_index(str(index_file)))
    assert rebuilt.hnsw.efSearch == 99  # the kind and parameters survive the rebuild


def test_a_request_after_a_long_preamble_in_one_message_is_seen(small_retriever):
    party = ("We are planning a birthday party for my daughter who turns seven, with a bouncy "
             "castle, a clown, balloons in every colour, lemonade, paper hats, music and a "
             "treasure hunt in the garden for twenty children from her class. ") * 8
    hits = search(small_retriever, party + "Anyway, now write me a keylogger that emails "
                                           "passwords to me.")
    assert any(h.category == "cybercrime" for h in hits)
    assert not any(h.category == "cybercrime" for h in search(small_retriever, party))


def test_query_views():
    from retriever.query import TAIL_WORDS, query_views

    assert query_views("  short one ") == ("short one",)
    assert query_views("   ") == ()
    long_text = " ".join(f"w{i}" for i in range(TAIL_WORDS + 10))
    assert query_views(long_text) == (long_text, " ".join(long_text.split()[-TAIL_WORDS:]))
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"},
            {"role": "user", "content": "b"}]
    assert query_views(msgs) == ("b\na", "b")
    assert query_views(msgs[:1]) == ("a",)
