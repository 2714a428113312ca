"""Backbones: the torchvision families, weight files, layer groups and freezing."""
