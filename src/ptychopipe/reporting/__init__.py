"""Reporting: the tables and figures made across scenarios from what the stages wrote.

What belongs here: the telemetry table (:mod:`.telemetry_table`), the summary of the
evaluation with its overview figure (:mod:`.summary`), the dose response of the dose sweep
(:mod:`.dose`), the results table of the documentation (:mod:`.quality`), the section on the
network against the iterative reference (:mod:`.baseline`, imported when a report has one),
the image figures
of the inputs and of the reconstructions (:mod:`.figures`) and the CSV writing they share
(:mod:`.common`). Every report reads the stages' artifacts and writes only its own files;
scoring a reconstruction is :mod:`ptychopipe.evaluation`, and the benchmarks'
reports are their own (:mod:`ptychopipe.benchmarks`).
"""

from .common import write_csv
from .dose import BIAS_TARGET, DOSE_COLUMNS, dose_figure, dose_rows, write_dose_response
from .figures import brightest_pattern, data_figure, reconstruction_grid
from .quality import (DEVICE_ATTRS, QUALITY_END, QUALITY_HEADER, QUALITY_START, QUALITY_TITLE, copy_quality_table,
                      quality_block, quality_rows, replace_between_markers, write_quality_table)
from .summary import (PROVENANCE_COLUMNS, SUMMARY_COLUMNS, SUMMARY_MD_COLUMNS, overview_figure, phase_scale_note,
                      provenance, ratio_axis_limits, summary_row, summary_rows, write_summary)
from .telemetry_table import STAGE_FILES, stage_artifacts, telemetry_rows, write_telemetry_table

__all__ = ["BIAS_TARGET", "DEVICE_ATTRS", "DOSE_COLUMNS", "PROVENANCE_COLUMNS", "QUALITY_END", "QUALITY_HEADER",
           "QUALITY_START", "QUALITY_TITLE", "STAGE_FILES", "SUMMARY_COLUMNS", "SUMMARY_MD_COLUMNS",
           "brightest_pattern", "copy_quality_table", "data_figure", "dose_figure", "dose_rows",
           "overview_figure", "phase_scale_note", "provenance", "quality_block", "quality_rows", "ratio_axis_limits",
           "reconstruction_grid", "replace_between_markers", "stage_artifacts", "summary_row", "summary_rows",
           "telemetry_rows", "write_csv", "write_dose_response", "write_quality_table", "write_summary",
           "write_telemetry_table"]
