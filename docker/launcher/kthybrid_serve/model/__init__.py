"""The model as its config and safetensors headers give it."""
