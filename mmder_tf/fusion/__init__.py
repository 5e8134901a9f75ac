"""From decoded media to the model input: alignment, spectrogram images, the fusion strategies, and the one clip -> input function (`clip.py`)."""
