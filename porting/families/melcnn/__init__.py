"""librosa-mel CNN classifiers: Project-Echo's Hydra run directories (EfficientNetV2, PANNs CNN14 without its frontend)."""
