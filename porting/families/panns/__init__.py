"""PANNs audio taggers (audioset_tagging_cnn / panns_inference checkpoints): reader, rebuild, detector, parity, exports."""
