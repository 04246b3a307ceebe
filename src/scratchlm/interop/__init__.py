"""Bridges to other ecosystems' model formats (hf: the Hugging Face Llama format)."""
