"""senseindex indexing layer: the encoder, the on-disk storage and the build pipeline."""
