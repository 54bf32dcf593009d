"""Video output: encoding frames to files with the workflow embedded, and test patterns."""

from .combine import Encoding, Provenance, SavedVideo, combine_video, metadata_entries
from .formats import FORMATS, VideoFormat, get_format

__all__ = [
    "FORMATS",
    "Encoding",
    "Provenance",
    "SavedVideo",
    "VideoFormat",
    "combine_video",
    "get_format",
    "metadata_entries",
]
