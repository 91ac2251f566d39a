"""Model presets, loading, tokenizer training and the chat template."""
