"""Files in and out: safetensors checkpoints (transformers' names and layout), the tokenizer files."""
