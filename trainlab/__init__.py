"""trainlab: train image classifiers (MLP, CNN, ViT) from one config, on a CPU, GPUs or Slurm."""

__version__ = "0.1.0"
