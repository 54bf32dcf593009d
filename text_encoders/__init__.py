"""Tokenizers and text encoders (UMT5 first)."""
