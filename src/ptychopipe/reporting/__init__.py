"""Reporting: the tables and figures made across scenarios from the stages' artifacts.

What belongs here: the telemetry table, the summary report, the dose response and the
results table of the documentation (:mod:`.summary`), and the figures of the inputs and
of all reconstructions (:mod:`.figures`). Scoring a reconstruction is
:mod:`ptychopipe.evaluation`; nothing here writes a stage artifact.
"""

from .figures import brightest_pattern, data_figure, reconstruction_grid
from .summary import (
                        BIAS_TARGET,
                        DEVICE_ATTRS,
                        DOSE_COLUMNS,
                        PROVENANCE_COLUMNS,
                        QUALITY_END,
                        QUALITY_HEADER,
                        QUALITY_START,
                        QUALITY_TITLE,
                        STAGE_FILES,
                        SUMMARY_COLUMNS,
                        SUMMARY_MD_COLUMNS,
                        copy_quality_table,
                        dose_figure,
                        dose_rows,
                        overview_figure,
                        phase_scale_note,
                        provenance,
                        quality_block,
                        quality_rows,
                        ratio_axis_limits,
                        replace_between_markers,
                        stage_artifacts,
                        summary_row,
                        summary_rows,
                        telemetry_rows,
                        write_csv,
                        write_dose_response,
                        write_quality_table,
                        write_summary,
                        write_telemetry_table,
)

__all__ = ["BIAS_TARGET", "DEVICE_ATTRS", "DOSE_COLUMNS", "PROVENANCE_COLUMNS", "QUALITY_END", "QUALITY_HEADER",
           "QUALITY_START", "QUALITY_TITLE", "STAGE_FILES", "SUMMARY_COLUMNS", "SUMMARY_MD_COLUMNS",
           "brightest_pattern", "copy_quality_table", "data_figure", "dose_figure", "dose_rows", "overview_figure",
           "phase_scale_note", "provenance", "quality_block", "quality_rows", "ratio_axis_limits",
           "reconstruction_grid", "replace_between_markers", "stage_artifacts", "summary_row", "summary_rows",
           "telemetry_rows", "write_csv", "write_dose_response", "write_quality_table", "write_summary",
           "write_telemetry_table"]
