"""textcl: contrastive fine-tuning for text embedders."""
__version__ = "0.1.0"
