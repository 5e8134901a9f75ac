"""Media: decoding containers with PyAV, writing clips, finding faces."""
