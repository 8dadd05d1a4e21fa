"""Posts in: manifests, images, splits and the bundled demo set."""
