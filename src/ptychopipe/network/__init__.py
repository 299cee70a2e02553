"""The physics-informed network (docs/design.md, 'Reconstruction modes'), by concern.

What belongs here: the Keras side of the reconstruction, and nothing of a stage. The
forward model as layers and what the modules share (:mod:`.layers`), the physics input
layers that solve each group's small ptychography problem, with the table of estimate
algorithms (:mod:`.estimates`), the U-Net that corrects an estimate and its heads
(:mod:`.unet`), the Poisson loss (:mod:`.loss`), and the models assembled from them with
their sub-models and accessors (:mod:`.build`, where the architecture is described). Every
module uses ``keras.ops`` only (no ``tf.*``), so the network runs with
``KERAS_BACKEND=jax``; the fixed arrays (probe, overlap weight) are non-trainable weights,
saved in ``model.keras`` with the others; importing this package registers every custom
layer under :data:`~.layers.PACKAGE` for ``keras.saving.load_model``. The train, infer,
benchmark and time-to-quality code call these; nothing here reads or writes an artifact.
"""

from .build import (
                        build_cnn,
                        build_model,
                        build_model_from_config,
                        estimate_is_learned,
                        estimate_model,
                        head_model,
                        model_amplitude_estimate,
                        model_canvas,
                        model_inputs,
                        model_probe,
                        physics_model,
                        training_model,
)
from .estimates import (
                        ESTIMATE_LAYERS,
                        EstimateObject,
                        GroupEstimate,
                        UnrolledEstimate,
                        estimate_probe,
)
from .layers import (
                        PACKAGE,
                        AmplitudePhase,
                        ComplexObject,
                        FarFieldCounts,
                        OverlapConstraint,
                        TotalVariation,
                        fft_friendly,
                        merge_canvas,
                        overlap_weight,
                        physics_layers,
)
from .loss import LAMBDA_FLOOR, PoissonLoss, deviance_terms, poisson_deviance_np
from .unet import (
                        LOG_AMPLITUDE_BOUNDS,
                        AmplitudeActivation,
                        FoldMembers,
                        PhaseActivation,
                        RefineEstimate,
                        UnfoldMembers,
                        unet_heads,
)

__all__ = ["ESTIMATE_LAYERS", "LAMBDA_FLOOR", "LOG_AMPLITUDE_BOUNDS", "PACKAGE", "AmplitudeActivation",
           "AmplitudePhase", "ComplexObject", "EstimateObject", "FarFieldCounts", "FoldMembers",
           "GroupEstimate", "OverlapConstraint", "PhaseActivation", "PoissonLoss", "RefineEstimate", "TotalVariation",
           "UnfoldMembers", "UnrolledEstimate", "build_cnn", "build_model", "build_model_from_config",
           "deviance_terms", "estimate_is_learned", "estimate_model", "estimate_probe", "fft_friendly", "head_model",
           "merge_canvas", "model_amplitude_estimate", "model_canvas", "model_inputs", "model_probe", "overlap_weight",
           "physics_layers", "physics_model", "poisson_deviance_np", "training_model", "unet_heads"]
