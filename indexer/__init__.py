"""senseindex indexing layer: the encoder, the on-disk storage and the build pipeline."""

__version__ = "0.1.0"
