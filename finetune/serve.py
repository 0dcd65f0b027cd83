"""Serving a tuned model behind the gateway: GGUF export for the llama.cpp server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

# Template keys that describe the base network's shape: rewritten from the tuned model's config.
_SKIP_PREFIXES = ("GGUF.", "llama.", "general.architecture", "general.file_type",
                  "general.quantization_version", "general.name")


class GGUFExportError(Exception):
    """The model cannot be written as a llama.cpp GGUF file."""


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from the HF rotary layout to llama.cpp's (as convert_hf_to_gguf does)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default") if isinstance(params, dict) else "default"
    scaling = getattr(config, "rope_scaling", None)
    if isinstance(scaling, dict):
        rope_type = scaling.get("rope_type", scaling.get("type", rope_type))
    if rope_type != "default":
        raise GGUFExportError(f"rope scaling {rope_type!r} is not supported by this exporter")
    theta = getattr(config, "rope_theta", None) or (params.get("rope_theta")
                                                    if isinstance(params, dict) else None)
    return float(theta or 10000.0)


def _llama_metadata(writer: Any, config: Any) -> None:
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(int(config.vocab_size))
    if head_dim * heads != int(config.hidden_size):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def check_gguf_template(template: Path, config: Any) -> Any:
    """The GGUF reader of ``template`` once it fits a model with ``config`` (else an error).

    Called before training as well as at export, so a wrong template fails in seconds rather
    than after the training run.
    """
    import gguf

    if getattr(config, "model_type", None) != "llama":
        raise GGUFExportError(f"only llama-architecture models are exported (got "
                              f"{getattr(config, 'model_type', None)!r}); serve the merged "
                              "directory with another backend instead")
    if not Path(template).is_file():
        raise GGUFExportError(f"{template}: no such GGUF file")
    try:
        reader = gguf.GGUFReader(str(template))
    except (ValueError, OSError) as exc:
        raise GGUFExportError(f"{template}: not a readable GGUF file ({exc})") from None
    arch = reader.fields.get("general.architecture")
    if arch is None or arch.contents() != "llama":
        raise GGUFExportError(f"{template}: not a llama-architecture GGUF file")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens.data) if tokens is not None else 0
    if n_tokens != int(config.vocab_size):
        raise GGUFExportError(f"{template} has {n_tokens} tokens but the model's vocabulary has "
                              f"{config.vocab_size}; use the base model's own GGUF as template")
    return reader


def export_gguf(model: Any, out: Path, *, template: Path, name: str, f16: bool = True) -> Path:
    """Write a llama-architecture model as GGUF, with the tokenizer and template of ``template``.

    ``template`` is the base model's GGUF file (the tokenizer must be the same); ``model`` is a
    merged transformers LlamaForCausalLM. Matrices are stored as F16 (or F32), norms as F32.
    """
    import gguf

    config = model.config
    reader = check_gguf_template(template, config)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    for field in reader.fields.values():
        if field.name.startswith(_SKIP_PREFIXES):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _llama_metadata(writer, config)

    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(config.num_hidden_layers))
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        if "rotary_emb" in hf_name:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise GGUFExportError(f"no GGUF name for tensor {hf_name}")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        data = data.astype(np.float16 if f16 and data.ndim > 1 else np.float32)
        writer.add_tensor(gguf_name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def server_command(gguf_file: Path, *, host: str = "127.0.0.1", port: int = 8082,
                   alias: str = "guide-align-tuned", n_ctx: int = 2048,
                   threads: int = 0) -> list[str]:
    """The llama.cpp OpenAI-compatible server command serving ``gguf_file``."""
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_file),
           "--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", alias]
    if threads:
        cmd += ["--n_threads", str(threads)]
    return cmd
