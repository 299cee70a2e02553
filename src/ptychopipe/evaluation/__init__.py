"""Evaluation: how a reconstruction is scored, and nothing else.

What belongs here: aligning a reconstruction with the truth (:mod:`.alignment`), the image
metrics and the Fourier ring correlation (:mod:`.metrics`), scoring one reconstruction
(:mod:`.score`, :func:`evaluate`), the stage-ratio chain, the NaN status and the training
summary (:mod:`.chain`), scoring in data space when there is no truth (:mod:`.dataspace`)
and the compare stage's figures (:mod:`.figures`). The compare stage
(:mod:`ptychopipe.stages.compare`), the pty-chi baseline and the benchmarks call these;
none of them writes an artifact. Two read what they score from the artifacts: the chain
(their telemetry) and the data-space scores (inferred.h5 and simulated.h5).
"""

from .alignment import (
                        evaluation_mask,
                        global_phase_offset,
                        register_shift,
                        relative_phase,
                        shift_image,
                        truth_on_canvas,
)
from .chain import (
                        CHAIN_CONTRACTS,
                        PHASE_LINKS,
                        ChainLink,
                        chain_entries,
                        nan_status,
                        ratio_chain,
                        raw_mean_amplitude,
                        training_summary,
)
from .dataspace import data_space_metrics, ring_profile
from .metrics import (
                        FRC,
                        SSIM_WIN,
                        frc_curve,
                        frc_cutoff,
                        frc_threshold_curve,
                        image_metrics,
                        ls_scale,
                        mae,
                        masked_ssim,
                        pearson_r,
                        psnr,
                        rmse,
)
from .score import Evaluation, evaluate

__all__ = ["CHAIN_CONTRACTS", "FRC", "PHASE_LINKS", "SSIM_WIN", "ChainLink", "Evaluation", "chain_entries",
           "data_space_metrics", "evaluate", "evaluation_mask", "frc_curve", "frc_cutoff", "frc_threshold_curve",
           "global_phase_offset", "image_metrics", "ls_scale", "mae", "masked_ssim", "nan_status", "pearson_r", "psnr",
           "ratio_chain", "raw_mean_amplitude", "register_shift", "relative_phase", "rmse", "ring_profile",
           "shift_image", "training_summary", "truth_on_canvas"]
