"""ssmix: saliency-based span mixup (SSMix) and its baselines for HuggingFace encoders."""

__version__ = "0.1.0"
