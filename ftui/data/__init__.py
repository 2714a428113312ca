"""Datasets of images and labels: finding, decoding, splitting, augmenting, caching, fixing."""
