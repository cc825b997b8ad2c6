"""mmops: an MLOps platform for multimodal models (sensor time series, images, text)."""

__version__ = "0.1.0"
