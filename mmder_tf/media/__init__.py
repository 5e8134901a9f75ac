"""Media: decoding containers with PyAV (clips, and long recordings as streamed windows), writing clips, finding faces."""
