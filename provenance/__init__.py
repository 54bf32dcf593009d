"""Provenance: an invisible watermark that survives video handling, and signed C2PA credentials."""
