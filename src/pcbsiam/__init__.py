"""pcbsiam: Siamese deep feature-fusion ResNet for PCB defect inspection."""

__version__ = "0.1.0"
