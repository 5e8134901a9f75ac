"""Training: the engine (compile, fit, resume, distribute, feature-cached linear probe)."""
