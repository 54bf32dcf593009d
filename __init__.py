"""ComfyUI-Spacetime: Sora-style text-to-video as ComfyUI nodes."""

from . import host
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

host.register_pack_folders()  # Tiny World's LoRA among ComfyUI's loras

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
