"""Models in pure Keras 3: shared layers, the VideoMAE family, the emotion task model, checkpoint conversion."""
