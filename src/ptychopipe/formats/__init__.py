"""The external file formats the pipeline reads and writes: NPZ (PtychoPINN's dataset
layout) and ptychodus (a product HDF5 with its diffraction HDF5). Each format has one module
holding its layout, its conventions and how they map onto the pipeline's, its reader (file
-> :class:`~ptychopipe.formats.common.Imported`, what the ingest stage converts) and its
writer (:class:`~ptychopipe.formats.common.Reconstruction` -> file, what the export stage
writes); :mod:`ptychopipe.formats.common` holds what the formats share: the pipeline
conventions every conversion targets, the two records, the errors, and the probe and object
frame helpers. No stage runs here: the ingest stage (:mod:`ptychopipe.stages.ingest`, its checks in
:mod:`ptychopipe.ingest`) and the export command (:mod:`ptychopipe.export`) use these
modules, and nothing in this package imports them.
"""

from __future__ import annotations

#: The formats, as ``source.format`` and ``ptychopipe export --format`` name them.
FORMATS = ("npz", "ptychodus")
