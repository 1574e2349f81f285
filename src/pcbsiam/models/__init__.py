"""Plain nn.Modules: multi-scale backbone, fusion head and the Siamese network."""

from pcbsiam.models.siamese import Embedded, SiameseFusionNet, build_model

__all__ = ["Embedded", "SiameseFusionNet", "build_model"]
