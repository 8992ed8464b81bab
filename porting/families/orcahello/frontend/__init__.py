"""Stages A (windows), B (mel dB) and C (crop/pad) of the legacy OrcaHello frontend.

See golden/README.md, "The legacy flow step by step": every quirk reproduced here is named there.
"""

from .config import FrontendConfig, MelConfig, PadConfig, WindowConfig

__all__ = ["FrontendConfig", "MelConfig", "PadConfig", "WindowConfig"]
