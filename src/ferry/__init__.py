"""ferry: a model-serving system that speaks TensorFlow Serving's APIs."""

__version__ = "0.1.0"
