"""Turn stored study results into a Markdown and a self-contained HTML report."""

from scratchformer.report.build import build_report  # noqa: F401
