"""scratchlm: build a Llama-style language model from scratch, end to end."""

from scratchlm.config import Config, ModelConfig, load_config
from scratchlm.errors import ScratchError
from scratchlm.model import Transformer

__all__ = ["Config", "ModelConfig", "ScratchError", "Transformer", "load_config"]
__version__ = "0.1.0"
