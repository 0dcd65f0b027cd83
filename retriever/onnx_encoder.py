"""ONNX Runtime encoder: a sentence-transformers model exported to ONNX (fp32 or int8)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retriever.encoder import EncoderError

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "onnx_config.json"
OPSET = 17


@dataclass(frozen=True)
class OnnxExportConfig:
    """How to export: int8 dynamic quantisation of the weights or plain fp32."""

    quantize: bool = False
    opset: int = OPSET


def _threads() -> int:
    # Half the cores (at most 4): the gateway shares its machine with request handling and often
    # the LLM; on 2 shared cores a second intra-op thread tripled single-query latency.
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def _normalise(vecs: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.ascontiguousarray(vecs / np.maximum(norms, 1e-12), dtype=np.float32)


class OnnxEncoder:
    """Tokenise with `tokenizers`, embed with ONNX Runtime, L2-normalise."""

    def __init__(self, path: Path | str, *, threads: int | None = None, batch_size: int = 64):
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # the `serve` extra brings both
            raise EncoderError(f"the onnx backends need onnxruntime and tokenizers: {exc}") from exc
        self.path = Path(path)
        if not (self.path / MODEL_FILE).is_file() or not (self.path / CONFIG_FILE).is_file():
            raise EncoderError(f"{self.path}: not an ONNX encoder (run "
                               "`guide-align retriever export-encoder`)")
        cfg = json.loads((self.path / CONFIG_FILE).read_text("utf-8"))
        self._dim = int(cfg["dim"])
        self._inputs: list[str] = list(cfg["inputs"])
        self._lower = bool(cfg.get("do_lower_case", False))
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(self.path / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(max_length=int(cfg["max_seq_length"]))
        self.tokenizer.enable_padding(pad_id=int(cfg["pad_id"]), pad_token=str(cfg["pad_token"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _threads()
        options.inter_op_num_threads = 1
        # busy-waiting workers starve whatever else runs on the cores (they did here)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path / MODEL_FILE), options,
                                            providers=["CPUExecutionProvider"])

    @property
    def dim(self) -> int:
        return self._dim

    def _run(self, texts: list[str]) -> np.ndarray:
        encs = self.tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encs],
            "attention_mask": [e.attention_mask for e in encs],
            "token_type_ids": [e.type_ids for e in encs],
        }
        feed = {name: np.asarray(columns[name], dtype=np.int64) for name in self._inputs}
        out = self.session.run(None, feed)[0]
        return np.asarray(out, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings, one row per text (batched by length, as in ST)."""
        clean = [str(t).strip() for t in texts]
        if self._lower:
            clean = [t.lower() for t in clean]
        if not clean:
            return np.zeros((0, self._dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in clean], kind="stable")
        out = np.empty((len(clean), self._dim), dtype=np.float32)
        for start in range(0, len(clean), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self._run([clean[i] for i in rows])
        return _normalise(out)


def _wrapped(model: Any, inputs: list[str]) -> Any:
    """Named tensor inputs -> the sentence-transformers pipeline's sentence embedding."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features = dict(zip(inputs, tensors, strict=True))
            return self.model(features)["sentence_embedding"]

    return Wrapped().eval()


def export_onnx(source: Path | str, out_dir: Path, *, config: OnnxExportConfig | None = None)\
        -> dict[str, Any]:
    """Export the sentence-transformers model at ``source`` into ``out_dir``; returns its config."""
    import torch
    from sentence_transformers import SentenceTransformer

    config = config or OnnxExportConfig()
    model: Any = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    features = model.preprocess(["an example input", "a second, somewhat longer example input"])
    inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids")
              if isinstance(features.get(k), torch.Tensor)]
    tokenizer = model.tokenizer
    get_dim = getattr(model, "get_embedding_dimension", None) \
        or model.get_sentence_embedding_dimension
    onnx_config = {
        "dim": int(get_dim()),
        "inputs": inputs,
        "max_seq_length": int(model.max_seq_length),
        "do_lower_case": bool(getattr(model[0], "do_lower_case", False)),
        "pad_id": int(tokenizer.pad_token_id or 0),
        "pad_token": str(tokenizer.pad_token),
        "quantized": config.quantize,
        "opset": config.opset,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.backend_tokenizer.save(str(out_dir / TOKENIZER_FILE))
    fp32 = out_dir / ("model_fp32.onnx" if config.quantize else MODEL_FILE)
    axes = {name: {0: "batch", 1: "seq"} for name in inputs}
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about shape-dependent branches that are constant for this graph
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _wrapped(model, inputs), tuple(features[k] for k in inputs), str(fp32),
            input_names=inputs, output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=config.opset, dynamo=False,
        )
    if config.quantize:
        quantize_int8(fp32, out_dir / MODEL_FILE)
        fp32.unlink()
    (out_dir / CONFIG_FILE).write_text(json.dumps(onnx_config, indent=2) + "\n", "utf-8")
    return onnx_config


def quantize_int8(model_in: Path, model_out: Path) -> None:
    """Dynamic int8 quantisation of the weights (activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises pre-processing on the root logger; not needed here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # per-channel weight scales keep int8 rankings close to fp32 (per-tensor loses ~1 pt)
            quantize_dynamic(str(model_in), str(model_out), weight_type=QuantType.QInt8,
                             per_channel=True)
    finally:
        root.setLevel(level)
