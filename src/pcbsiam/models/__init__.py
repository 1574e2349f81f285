"""Plain nn.Modules: backbone, heads, the band channel, and one file per mode behind one contract.

Importing this package registers every shipped mode (``paper``, ``diff``, ``stack``).
"""

from pcbsiam.models.base import Encoded, PairModel, build_model, create_model, list_modes, mode_class, register_mode
from pcbsiam.models.diff import ReferenceAwareNet
from pcbsiam.models.paper import Embedded, SiameseFusionNet
from pcbsiam.models.stack import StackedPairNet

__all__ = [
    "Embedded",
    "Encoded",
    "PairModel",
    "ReferenceAwareNet",
    "SiameseFusionNet",
    "StackedPairNet",
    "build_model",
    "create_model",
    "list_modes",
    "mode_class",
    "register_mode",
]
