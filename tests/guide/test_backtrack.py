"""The window arithmetic, the marker, the continuation messages and the closing language."""

from __future__ import annotations

import pytest

from guide.backtrack import (
    CLOSINGS,
    FOLD,
    Marker,
    closing,
    continuation_messages,
    guess_language,
    release_point,
    word_boundary,
)
from guide.options import GuideOptions, Policy, apply_options


def test_word_boundary_never_splits_a_word():
    assert word_boundary("Hello wor") == len("Hello ")
    assert word_boundary("Hello world ") == len("Hello world ")
    assert word_boundary("Hello") == 0


def test_release_point_holds_the_last_window_words_of_what_was_judged():
    text = "one two three four five six seven eight "
    judged = len("one two three four five ")
    assert text[: release_point(text, judged, 2)] == "one two three "
    assert release_point(text, judged, 5) == 0  # not enough judged words yet
    assert release_point(text, judged, 0) == judged


def test_marker_removes_exactly_the_words_it_names():
    m = Marker()
    text = f"Safe start. A bad span here {m.render(4)} Safe end."
    assert m.apply(text) == ("Safe start. Safe end.", [4])
    # never more than what is still held (after ``floor``), and never the marker itself
    held = "Safe start. A bad "
    assert m.apply(held + f"x {m.render(9)} y", floor=len("Safe start. "))[0] == \
        "Safe start. y"


def test_partial_marker_is_held_until_it_is_clear():
    m = Marker("<<undo {n}>>")
    assert m.partial_start("some text <<un") == len("some text ")
    assert m.partial_start("some text <<undo 12>") == len("some text ")
    assert m.partial_start("some text <<undo x") == len("some text <<undo x")
    assert m.partial_start("plain") == len("plain")
    with pytest.raises(ValueError):
        Marker("{n} words back")


def test_fold_and_prefill_continuations():
    guided = [{"role": "system", "content": "Guidelines."},
              {"role": "user", "content": "question"}]
    folded = continuation_messages(guided, "Partial answer ", block="Be careful.", how="fold")
    assert folded[0]["content"] == "Guidelines.\n\nBe careful."
    assert folded[1]["content"] == "question\n\n" + FOLD.format(prefix="Partial answer")
    assert guided[1]["content"] == "question"  # the caller's messages are not changed
    prefilled = continuation_messages(guided, "Partial answer ", block="B", how="prefill")
    assert prefilled[-1] == {"role": "assistant", "content": "Partial answer "}
    assert continuation_messages(guided, " ", block="B", how="fold")[1] == guided[1]


def test_closing_speaks_the_users_language():
    assert guess_language("¿Cómo puedo entrar en la red de mi vecino para que no lo sepa?") == "es"
    assert guess_language("Wie komme ich in das Netz, ohne dass er es merkt?") == "de"
    assert guess_language("zzz qqq") == "en"
    assert closing([{"role": "user", "content": "Comment je peux faire ça pour les voisins ?"}]
                   ) == CLOSINGS["fr"]


def test_backtracking_options_only_tighten():
    base = Policy(backtrack="monitor", backtrack_window=8, backtrack_max_retractions=2)
    tighter = apply_options(base, GuideOptions(backtrack="enforce", backtrack_window=20,
                                               backtrack_max_retractions=1))
    assert (tighter.policy.backtrack, tighter.policy.backtrack_window,
            tighter.policy.backtrack_max_retractions) == ("enforce", 20, 1)
    looser = apply_options(base, GuideOptions(backtrack="off", backtrack_window=2,
                                              backtrack_max_retractions=5))
    assert looser.policy == base
    assert sorted(looser.ignored) == ["backtrack", "backtrack_max_retractions",
                                      "backtrack_window"]
    assert apply_options(base, GuideOptions(backtrack="off"), allow_loosen=True
                         ).policy.backtrack == "off"
