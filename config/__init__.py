"""One typed configuration object per process (``config.loader`` says how it is built; the section
modules say what each setting means). Import what you need from here::

    from config import Config, load_config
"""
from config.loader import PROJECT_ROOT, load_config
from config.schema import Config
from config.sources import SourceConfig
from core.errors import ConfigError

__all__ = ["Config", "ConfigError", "PROJECT_ROOT", "SourceConfig", "load_config"]
