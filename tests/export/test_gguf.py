"""``minigpt export --format gguf``: the file read back with gguf's own reader, and its weights run by a
small numpy forward pass that follows llama.cpp's conventions (pair-wise rope for ``llama``, half-wise for
``qwen3``/``qwen3moe``, weights and hyper-parameters taken from the GGUF file only), compared with
transformers' logits. A wrong name, layout, permutation or metadata value changes those logits."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from support import SMALL

gguf = pytest.importorskip("gguf")

from minigpt.cli import main  # noqa: E402
from minigpt.errors import ModelError  # noqa: E402
from minigpt.export.gguf_tensors import pairwise_rope_rows  # noqa: E402
from minigpt.export.gguf_vocab import vocab_of  # noqa: E402
from minigpt.export.gguf_writer import write_gguf  # noqa: E402
from minigpt.models.presets import preset_config  # noqa: E402
from minigpt.models.tokenizer import CHAT_TEMPLATE, IM_END, PAD_TOKEN, without_generation_markers  # noqa: E402

MOE = {
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 48,
    "decoder_sparse_step": 1,
    "norm_topk_prob": True,
}
SEQUENCES = [[5, 17, 200, 42, 8, 99, 250, 3], [255, 256, 11, 150, 33], [7]]  # ids < 261: below any vocab size


def save_model(folder: Path, tokenizer_dir: Path, model_type: str, extra_rows: int = 0, **fields) -> Path:
    """A seeded tiny model whose weights are large enough that attention is far from uniform (so a wrong
    rope layout shows in the logits), with random norm scales (so a swapped norm shows too)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = preset_config("tiny", {**SMALL, "initializer_range": 0.15, **fields})
    config.pop("model_type")
    config["vocab_size"] = len(tokenizer) + extra_rows
    config.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.3 * torch.randn_like(param))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def hf_logits(folder: Path, sequence: list[int], f16_weights: bool = False) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    if f16_weights:  # what the f16 file holds: matrices rounded to f16, norms kept in f32
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.ndim > 1 and not name.endswith("mlp.gate.weight"):  # the MoE router stays f32
                    param.copy_(param.half().float())
    with torch.no_grad():
        return model.eval()(torch.tensor([sequence])).logits[0].double().numpy()


def export(folder: Path, dtype: str) -> Path:
    from minigpt.export.gguf_writer import load_for_export

    model, tokenizer = load_for_export(folder)
    return write_gguf(model, tokenizer, folder.parent / f"{folder.name}-{dtype}.gguf", dtype, folder.name)


def field(reader, key: str):
    return reader.fields[key].contents()


# ---- a reference forward pass over the GGUF file, in llama.cpp's conventions ----


def _rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def _rope(x: np.ndarray, theta: float, pairwise: bool) -> np.ndarray:
    """x [tokens, heads, dim]; pairwise: GGML's normal mode (rotate 2i with 2i+1), else NeoX (i with i+d/2)."""
    dim = x.shape[-1]
    angle = np.arange(x.shape[0])[:, None] * theta ** (-np.arange(0, dim, 2) / dim)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    first, second = (x[..., 0::2], x[..., 1::2]) if pairwise else (x[..., : dim // 2], x[..., dim // 2 :])
    turned = (first * cos - second * sin, second * cos + first * sin)
    out = np.empty_like(x)
    if pairwise:
        out[..., 0::2], out[..., 1::2] = turned
    else:
        out[..., : dim // 2], out[..., dim // 2 :] = turned
    return out


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def gguf_logits(path: Path, sequence: list[int], pairwise: bool | None = None) -> np.ndarray:
    """Logits for ``sequence`` computed from the GGUF file alone. ``pairwise`` forces a rope mode (the
    negative control); by default it is the architecture's, as llama.cpp picks it."""
    reader = gguf.GGUFReader(path)
    arch = field(reader, "general.architecture")
    w = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}
    heads, kv_heads = (
        field(reader, f"{arch}.attention.head_count"),
        field(reader, f"{arch}.attention.head_count_kv"),
    )
    dim = field(reader, f"{arch}.attention.key_length")
    assert field(reader, f"{arch}.rope.dimension_count") == dim
    eps, theta = (
        field(reader, f"{arch}.attention.layer_norm_rms_epsilon"),
        field(reader, f"{arch}.rope.freq_base"),
    )
    pairwise = (arch == "llama") if pairwise is None else pairwise
    x = w["token_embd.weight"][sequence]
    tokens = len(sequence)
    causal = np.triu(np.full((tokens, tokens), -np.inf), 1)
    for block in range(field(reader, f"{arch}.block_count")):
        p = f"blk.{block}."
        h = _rms(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(tokens, heads, dim)
        k = (h @ w[p + "attn_k.weight"].T).reshape(tokens, kv_heads, dim)
        v = (h @ w[p + "attn_v.weight"].T).reshape(tokens, kv_heads, dim)
        if p + "attn_q_norm.weight" in w:
            q, k = _rms(q, w[p + "attn_q_norm.weight"], eps), _rms(k, w[p + "attn_k_norm.weight"], eps)
        q, k = _rope(q, theta, pairwise), _rope(k, theta, pairwise)
        group = heads // kv_heads
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(dim) + causal
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        x = (
            x
            + np.einsum("hts,shd->thd", scores, v).reshape(tokens, heads * dim)
            @ w[p + "attn_output.weight"].T
        )
        h = _rms(x, w[p + "ffn_norm.weight"], eps)
        if p + "ffn_gate_inp.weight" in w:
            used = field(reader, f"{arch}.expert_used_count")
            router = h @ w[p + "ffn_gate_inp.weight"].T
            probs = np.exp(router - router.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            out = np.zeros_like(h)
            for t in range(tokens):
                top = np.argsort(-probs[t])[:used]
                for e in top:
                    gate = _silu(w[p + "ffn_gate_exps.weight"][e] @ h[t]) * (
                        w[p + "ffn_up_exps.weight"][e] @ h[t]
                    )
                    out[t] += probs[t, e] / probs[t, top].sum() * (w[p + "ffn_down_exps.weight"][e] @ gate)
        else:
            out = (_silu(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)) @ w[
                p + "ffn_down.weight"
            ].T
        x = x + out
    x = _rms(x, w["output_norm.weight"], eps)
    return x @ w.get("output.weight", w["token_embd.weight"]).T


# ---- tests ----


def test_gguf_metadata_tensors_and_vocab(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    folder = save_model(tmp_path / "sft", tiny_tokenizer_dir, "qwen3")
    path = export(folder, "f32")
    reader = gguf.GGUFReader(path)
    config = json.loads((folder / "config.json").read_text())
    expected = {
        "general.architecture": "qwen3",
        "general.name": "sft",
        "general.file_type": int(gguf.LlamaFileType.ALL_F32),
        "qwen3.context_length": config["max_position_embeddings"],
        "qwen3.embedding_length": 64,
        "qwen3.block_count": 2,
        "qwen3.feed_forward_length": 128,
        "qwen3.attention.head_count": 4,
        "qwen3.attention.head_count_kv": 2,
        "qwen3.attention.key_length": 16,
        "qwen3.attention.value_length": 16,
        "qwen3.rope.dimension_count": 16,
        "qwen3.vocab_size": config["vocab_size"],
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.chat_template": without_generation_markers(CHAT_TEMPLATE),  # llama-cpp-python refuses them
    }
    assert {key: field(reader, key) for key in expected} == expected
    assert field(reader, "qwen3.rope.freq_base") == pytest.approx(1_000_000.0)
    assert field(reader, "qwen3.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = tokenizer.get_vocab()
    assert field(reader, "tokenizer.ggml.eos_token_id") == vocab[IM_END]
    assert field(reader, "tokenizer.ggml.padding_token_id") == vocab[PAD_TOKEN]
    assert (
        field(reader, "tokenizer.ggml.bos_token_id") == vocab[PAD_TOKEN]
    )  # no bos: the separator, never added
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tokens == sorted(vocab, key=vocab.get)
    merges = json.loads((folder / "tokenizer.json").read_text())["model"]["merges"]
    assert field(reader, "tokenizer.ggml.merges") == [
        m if isinstance(m, str) else " ".join(m) for m in merges
    ]
    assert len(merges) > 100
    types = field(reader, "tokenizer.ggml.token_type")
    special = {vocab[t] for t in tokenizer.all_special_tokens}
    assert {i for i, kind in enumerate(types) if kind == gguf.TokenType.CONTROL} == special
    assert {kind for i, kind in enumerate(types) if i not in special} == {gguf.TokenType.NORMAL}

    tensors = {t.name: t for t in reader.tensors}
    per_block = {
        "attn_norm": [64],
        "attn_q": [64, 64],
        "attn_k": [64, 32],
        "attn_v": [64, 32],
        "attn_output": [64, 64],
        "attn_q_norm": [16],
        "attn_k_norm": [16],
        "ffn_norm": [64],
        "ffn_gate": [64, 128],
        "ffn_up": [64, 128],
        "ffn_down": [128, 64],
    }
    want = {f"blk.{b}.{name}.weight": shape for b in range(2) for name, shape in per_block.items()}
    want |= {"token_embd.weight": [64, len(tokens)], "output_norm.weight": [64]}  # tied: no output.weight
    assert {name: list(t.shape) for name, t in tensors.items()} == want  # GGML order: fastest dim first
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}


def test_gguf_f16_keeps_norms_f32_and_pads_the_vocab(tmp_path, tiny_tokenizer_dir):
    folder = save_model(tmp_path / "base", tiny_tokenizer_dir, "qwen3", extra_rows=3)
    reader = gguf.GGUFReader(export(folder, "f16"))
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert {n for n, k in kinds.items() if k == gguf.GGMLQuantizationType.F32} == {
        n for n in kinds if n.endswith("norm.weight")
    }
    assert {k for n, k in kinds.items() if not n.endswith("norm.weight")} == {gguf.GGMLQuantizationType.F16}
    assert field(reader, "general.file_type") == int(gguf.LlamaFileType.MOSTLY_F16)
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    rows = json.loads((folder / "config.json").read_text())["vocab_size"]
    assert len(tokens) == len(types) == rows == field(reader, "qwen3.vocab_size")
    assert tokens[-3:] == [f"[PAD{rows - 3}]", f"[PAD{rows - 2}]", f"[PAD{rows - 1}]"]
    assert types[-3:] == [gguf.TokenType.UNUSED] * 3


CASES = {
    "qwen3-f32": ("qwen3", "f32", {}),
    "qwen3-f16": ("qwen3", "f16", {}),
    "llama-untied-f32": ("llama", "f32", {"tie_word_embeddings": False}),
    "llama-f16": ("llama", "f16", {}),
    "qwen3moe-f32": ("qwen3_moe", "f32", MOE),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gguf_logits_equal_transformers(tmp_path, tiny_tokenizer_dir, case):
    model_type, dtype, fields = CASES[case]
    folder = save_model(tmp_path / case, tiny_tokenizer_dir, model_type, **fields)
    path = export(folder, dtype)
    reader = gguf.GGUFReader(path)
    assert ("output.weight" in {t.name for t in reader.tensors}) == (
        fields.get("tie_word_embeddings") is False
    )
    worst = 0.0
    for sequence in SEQUENCES:
        expected = hf_logits(folder, sequence, f16_weights=dtype == "f16")
        got = gguf_logits(path, sequence)
        assert expected.std() > 0.5  # logits far from flat: the comparison can see a wrong layout
        worst = max(worst, float(np.abs(got - expected).max()))
    assert worst < 1e-4
    if len(SEQUENCES[0]) > 1:  # negative control: the other rope mode on the same file is far off
        wrong = gguf_logits(path, SEQUENCES[0], pairwise=model_type != "llama")
        assert np.abs(wrong - hf_logits(folder, SEQUENCES[0], dtype == "f16")).max() > 0.05


def test_pairwise_rope_rows_turn_half_rotation_into_pair_rotation():
    rng = np.random.default_rng(0)
    heads, dim, width = 3, 8, 5
    weight = rng.normal(size=(heads * dim, width))
    x = rng.normal(size=(4, width))  # four positions
    halves = _rope((x @ weight.T).reshape(4, heads, dim), 10_000.0, pairwise=False)
    pairs = _rope((x @ pairwise_rope_rows(weight, heads).T).reshape(4, heads, dim), 10_000.0, pairwise=True)
    order = pairwise_rope_rows(np.arange(dim)[:, None], 1)[:, 0]
    assert order.tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    np.testing.assert_allclose(pairs, halves[..., order], atol=1e-12)
    with pytest.raises(ModelError, match="even size"):
        pairwise_rope_rows(np.zeros((6, 2)), 2)


def test_cli_export_writes_beside_the_checkpoint(tmp_path, tiny_tokenizer_dir, capsys):
    folder = save_model(tmp_path / "sft", tiny_tokenizer_dir, "qwen3")
    assert main(["export", str(folder), "--format", "gguf"]) == 0
    default = tmp_path / "sft-f16.gguf"
    assert f"written: {default}" in capsys.readouterr().out
    assert field(gguf.GGUFReader(default), "general.file_type") == int(gguf.LlamaFileType.MOSTLY_F16)
    chosen = tmp_path / "out" / "m.gguf"
    assert main(["export", str(folder), "--format", "gguf", "--dtype", "f32", "--output", str(chosen)]) == 0
    np.testing.assert_allclose(gguf_logits(chosen, SEQUENCES[0]), hf_logits(folder, SEQUENCES[0]), atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sft", "sft-f16.gguf"]


def test_cli_export_refuses_weights_llama_cpp_would_drop(tmp_path, tiny_tokenizer_dir, capsys):
    folder = save_model(tmp_path / "biased", tiny_tokenizer_dir, "qwen3", attention_bias=True)
    target = tmp_path / "biased.gguf"
    assert main(["export", str(folder), "--format", "gguf", "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert "model.layers.0.self_attn.q_proj.bias" in err and "cannot be exported to GGUF" in err
    assert list(tmp_path.glob("*.gguf")) == [] and list(tmp_path.glob(".*partial")) == []
    assert main(["export", str(tmp_path / "missing"), "--format", "gguf"]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(folder), "--format", "onnx"])


def test_vocab_refuses_a_tokenizer_llama_cpp_would_split_differently(tiny_tokenizer_dir):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert len(vocab_of(tokenizer, len(tokenizer), "ok").tokens) == len(tokenizer)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    with pytest.raises(ModelError, match="not a GPT-2 style byte-level BPE.*pre_tokenizer"):
        vocab_of(tokenizer, len(tokenizer), "tok")
    with pytest.raises(ModelError, match="only 3 rows"):
        vocab_of(AutoTokenizer.from_pretrained(tiny_tokenizer_dir), 3, "tok")


def _byte_of_char() -> dict[str, int]:
    """The inverse of the byte-level alphabet: each vocab character back to the byte it stands for."""
    from tokenizers import pre_tokenizers

    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    rest = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(rest)}
    assert set(table) == set(pre_tokenizers.ByteLevel.alphabet())
    return table


LLAMA_SIMPLE = shutil.which(os.environ.get("MINIGPT_LLAMA_SIMPLE", "llama-simple"))


@pytest.mark.skipif(LLAMA_SIMPLE is None, reason="llama.cpp's llama-simple is not installed")
@pytest.mark.parametrize("case", ["qwen3-f32", "llama-untied-f32", "qwen3moe-f32"])
def test_llama_cpp_generates_what_transformers_generates(tmp_path, tiny_tokenizer_dir, case):
    """The real consumer: llama.cpp's greedy continuation of a ChatML prompt, byte for byte."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_type, dtype, fields = CASES[case]
    folder = save_model(tmp_path / case, tiny_tokenizer_dir, model_type, **fields)
    path = export(folder, dtype)
    prompt = "<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n<|im_start|>assistant\n"
    run = subprocess.run(
        [LLAMA_SIMPLE, "-m", str(path), "-n", "20", prompt], capture_output=True, timeout=120
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    assert run.stdout.startswith(prompt.encode())  # llama.cpp echoes the prompt tokens it parsed
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    stops = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    out = model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=stops, pad_token_id=stops[1])
    byte_of = _byte_of_char()
    pieces = tokenizer.convert_ids_to_tokens([i for i in out[0, ids.shape[1] :].tolist() if i not in stops])
    expected = b"".join(bytes(byte_of[c] for c in piece) for piece in pieces)
    # llama-simple prints each piece as a C string: a NUL byte prints as nothing.
    assert run.stdout[len(prompt.encode()) :].strip(b"\n") == expected.replace(b"\x00", b"").strip(b"\n")


def test_gguf_export_of_an_unmerged_lora_folder_holds_the_merged_weights(tmp_path, tiny_tokenizer_dir):
    """A stage trained with ``lora.merge: false`` leaves adapter files only; the export merges them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = save_model(tmp_path / "base", tiny_tokenizer_dir, "qwen3")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
    )
    torch.manual_seed(1)
    peft_model = get_peft_model(model, lora)
    adapter = tmp_path / "sft"
    peft_model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    assert not (adapter / "config.json").exists()
    with torch.no_grad():
        merged = peft_model.merge_and_unload().eval()(torch.tensor([SEQUENCES[0]])).logits[0].double().numpy()
    assert np.abs(merged - hf_logits(base, SEQUENCES[0])).max() > 0.05  # the adapter changes the model
    assert main(["export", str(adapter), "--format", "gguf", "--dtype", "f32"]) == 0
    np.testing.assert_allclose(gguf_logits(tmp_path / "sft-f32.gguf", SEQUENCES[0]), merged, atol=1e-4)
