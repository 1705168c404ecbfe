"""From runs on disk to tables, statistics and figures: ``build_report`` (``symrl report``).

``build_report`` loads on first use: it pulls in matplotlib, which the light modules of this
package (``render``'s number formatting, used by ``symrl sweep``) must not cost their importers.
"""

__all__ = ["build_report"]


def __getattr__(name: str):
    if name == "build_report":
        from symrl.report.build import build_report

        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
