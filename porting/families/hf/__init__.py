"""The Hugging Face audio-classifier family: HF model folders read as data, rebuilt in plain torch."""
