"""Medical images: readers, de-identification, encoders, similar-image search, the fusion projector."""
