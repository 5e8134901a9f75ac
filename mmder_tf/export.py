"""`python -m mmder_tf.export` (mmder-export): export a trained run as a SavedModel. The code lives in `mmder_tf.serving.export`."""
from mmder_tf.serving.export import main

if __name__ == "__main__":
    raise SystemExit(main())
