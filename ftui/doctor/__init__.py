"""Dataset doctor: is this labeled image set fit to train on, and what should be fixed first?

`check(source) -> Report` runs every check; `Report.to_dict()`, `.to_frames()` and `.to_text()` give the
same findings as JSON, pandas DataFrames and a terminal table. Findings are hints ranked for a human.
"""

from ftui.doctor.cli import add_cli_arguments, run_cli
from ftui.doctor.core import DEFAULT_BACKBONE, CheckOptions, Limits, backbone_features, check
from ftui.doctor.labels import colour_histogram_features
from ftui.doctor.report import CheckResult, DoctorError, Report

__all__ = [
    "DEFAULT_BACKBONE", "CheckOptions", "CheckResult", "DoctorError", "Limits", "Report", "add_cli_arguments",
    "backbone_features", "check", "colour_histogram_features", "run_cli",
]
