"""Built-in fine-tuning methods, one module each (installed as `ribench.methods`)."""
