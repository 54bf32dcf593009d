"""LoRAs for the Wan DiT: read in the layouts people have, applied while the model runs."""

from .lora import Lora, LoraError, active, load_lora

__all__ = ["Lora", "LoraError", "active", "load_lora"]
