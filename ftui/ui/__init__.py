"""The Gradio app (the only package besides app.py that imports gradio)."""

from ftui.ui.context import AppContext, AppSettings
from ftui.ui.layout import build_app, launch_options

__all__ = ["AppContext", "AppSettings", "build_app", "launch_options"]
