"""ribench: robust fine-tuning benchmarks in the manner of ImageNet-RIB."""

__version__ = "0.1.0"
