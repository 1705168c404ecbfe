"""From runs on disk to tables, statistics and figures: ``build_report`` (``symrl report``)."""

from symrl.report.build import build_report

__all__ = ["build_report"]
