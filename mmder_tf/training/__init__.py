"""Training: the run configuration (config), cross-validation protocol (protocol), recipes (optimizers,
schedules, augmentation), engine (devices, precision, tf.distribute, resumable fits, prediction), the
frozen-encoder feature cache (features), the run's model and its strict loader (model), and every
private-Keras workaround (compat)."""
