"""Node classes: each declares its inputs and calls one library function."""

from .video_combine import SpacetimeVideoCombine

NODE_CLASS_MAPPINGS = {
    "SpacetimeVideoCombine": SpacetimeVideoCombine,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SpacetimeVideoCombine": "Video Combine (Spacetime)",
}
