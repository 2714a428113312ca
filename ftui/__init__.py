"""ftui: fine-tune pretrained image classifiers, from the browser, the CLI or Python."""

from ftui.config import AugConfig, ConfigError, TrainConfig

__all__ = ["AugConfig", "ConfigError", "TrainConfig"]
__version__ = "0.1.0"
