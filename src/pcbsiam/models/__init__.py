"""Plain nn.Modules: multi-scale backbone, fusion head and the Siamese network."""

from pcbsiam.models.siamese import MODES, Embedded, SiameseFusionNet, build_model, create_model

__all__ = ["MODES", "Embedded", "SiameseFusionNet", "build_model", "create_model"]
