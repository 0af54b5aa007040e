"""The inference sanity pass: load the model, show it an image, let it answer."""
