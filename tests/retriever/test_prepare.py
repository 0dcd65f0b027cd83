"""First-start training is done once even when two processes start together."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from guideline_lib.io import save_library
from retriever import prepare
from retriever.backends import MANIFEST


def test_concurrent_first_starts_train_once(tmp_path, monkeypatch, small_lib):  # type: ignore[no-untyped-def]
    save_library(small_lib, tmp_path / "lib")
    calls: list[Path] = []

    class Result:
        seconds, before, after = 0.0, {}, {}

    def slow_train(library, output, config=None):  # type: ignore[no-untyped-def]
        # The seam: record the call and write what a finished training leaves behind.
        calls.append(output)
        time.sleep(0.5)
        output.mkdir(parents=True)
        (output / MANIFEST).write_text(json.dumps({"library_hash": library.content_hash()}))
        return Result()

    monkeypatch.setattr(prepare, "train_retriever", slow_train)
    encoder = tmp_path / "var" / "encoder"
    threads = [threading.Thread(target=prepare.ensure_trained_encoder,
                                args=(tmp_path / "lib", encoder)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [encoder]
    assert prepare.trained_encoder_is_current(encoder, small_lib.content_hash())
