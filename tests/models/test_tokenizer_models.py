import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from minigpt.errors import ModelError
from minigpt.models.loading import build_model, check_model_folder, parameter_counts
from minigpt.models.model_config import ModelConfig
from minigpt.models.tokenizer import CHAT_TEMPLATE, IM_END, SPECIAL_TOKENS
from minigpt.registry import PRESETS


def test_tokenizer_round_trips_and_has_special_tokens(tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    for text in ["the cat sat on the mat.", "Unicode: héllo — 你好 🙂", "  spaces\tand\nnewlines  "]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    vocab = tok.get_vocab()
    assert all(s in vocab for s in SPECIAL_TOKENS)
    assert tok.eos_token == IM_END and tok.pad_token == "<|endoftext|>"
    # each special token is a single id
    assert len(tok("<think>x</think>", add_special_tokens=False)["input_ids"]) >= 3
    assert tok.convert_tokens_to_ids("<think>") != tok.unk_token_id


def test_chat_template_renders_with_generation_prompt(tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert tok.chat_template == CHAT_TEMPLATE
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert (
        tok.apply_chat_template(msgs, tokenize=False)
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
    )
    with_prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert with_prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("tiny", 0.7e6, 1.3e6),
        ("minimind-26m", 24e6, 28e6),
        ("minimind-104m", 95e6, 110e6),
        ("base-100m", 95e6, 115e6),
        ("moe-145m", 135e6, 155e6),
    ],
)
def test_preset_sizes(name, low, high):
    from transformers import AutoConfig

    fields = dict(PRESETS.get(name))
    model_type = fields.pop("model_type")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **fields))
    counts = parameter_counts(model)
    assert low <= counts["total"] <= high
    if name == "moe-145m":
        assert counts["active"] < counts["total"] * 0.8  # 2 of 4 experts active
    else:
        assert counts["active"] == counts["total"]


def test_preset_overrides_and_save_load_generate(tiny_tokenizer_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    cfg = ModelConfig(init="tiny", tokenizer=str(tiny_tokenizer_dir), overrides={"num_hidden_layers": 2})
    model = build_model(cfg, tok, torch.device("cpu"))
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tok)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    out = again.generate(**tok("the cat", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 2
    loaded = build_model(ModelConfig(init=str(tmp_path)), tok, torch.device("cpu"))
    assert torch.equal(loaded.model.embed_tokens.weight, again.model.embed_tokens.weight)


def test_model_folder_errors(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        check_model_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no weights"):
        check_model_folder(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="safetensors only"):
        check_model_folder(tmp_path)


def test_unknown_init_is_a_clear_error(tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    with pytest.raises(ModelError, match="not a preset"):
        build_model(ModelConfig(init="tinyy"), tok, torch.device("cpu"))
